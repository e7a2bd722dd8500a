"""What the Ray Tune callback costs the Tune driver per report, beside Tune's own loggers.

One real Tune experiment per repeat on a local cluster; Tune's automatic loggers are
turned off and its CSV and JSON logger callbacks added by hand beside
:class:`~rlobs.integrations.ray.RlobsTuneCallback` (the ``jsonl`` sink: the run log the
driver writes itself; MLflow and OTel would run in the shipper process). Each callback
is wrapped in a timer that counts the time spent in every hook; the figure is that time
divided by the reports, so trial start/end costs are spread over them. Medians over the
repeats; ratios against the CSV logger measured in the same experiment. Prints a
markdown table.

    PYTHONPATH=. python benchmarks/bench_tune.py [--trials 2] [--reports 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from rlobs import Hub
from rlobs.integrations.ray import RlobsTuneCallback

_HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore",
          "on_trial_save", "on_trial_result", "on_trial_complete", "on_trial_recover",
          "on_trial_error", "on_checkpoint", "on_experiment_end")


class Timed(tune.Callback):
    """Forwards every hook to ``inner`` and adds up the time spent in it."""

    def __init__(self, inner: tune.Callback) -> None:
        self.inner = inner
        self.ns = 0
        for hook in _HOOKS:
            setattr(self, hook, self._timed(getattr(inner, hook)))

    def _timed(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return method(*args, **kwargs)
            finally:
                self.ns += time.perf_counter_ns() - start
        return call

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "ns": self.ns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"])  # type: ignore[misc]


def trainable(config: dict[str, Any]) -> None:
    for i in range(config["reports"]):
        tune.report({"loss": 1.0 / (i + 1), "reward": float(i), "nested": {"lr": 0.1}})


def experiment(trials: int, reports: int, directory: str, hub: Hub) -> dict[str, float]:
    """µs per report spent in each callback, in one experiment."""
    timed = {"CSV logger (Tune)": Timed(CSVLoggerCallback()),
             "JSON logger (Tune)": Timed(JsonLoggerCallback()),
             "RlobsTuneCallback, jsonl": Timed(RlobsTuneCallback("bench", metric="loss",
                                                                 mode="min", hub=hub))}
    tuner = tune.Tuner(
        trainable, param_space={"reports": reports, "seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=directory, callbacks=list(timed.values()),
                                  verbose=0))
    tuner.fit()
    total = trials * reports
    return {name: t.ns / total / 1e3 for name, t in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        hub = Hub(["jsonl"], heartbeat_s=0, handle_signals=False,
                  env={"RLOBS_JSONL_DIR": os.path.join(directory, "runs")})
        with hub:
            for repeat in range(args.repeats):
                out = experiment(args.trials, args.reports,
                                 os.path.join(directory, f"tune-{repeat}"), hub)
                for name, us in out.items():
                    figures.setdefault(name, []).append(us)
                    ratios.setdefault(name, []).append(us / out["CSV logger (Tune)"])
    ray.shutdown()
    print(f"{args.trials} trials × {args.reports} reports, {args.repeats} repeats\n")
    print("| callback | µs per report (median) | × CSV logger |")
    print("|---|---:|---:|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.1f} | "
              f"{statistics.median(ratios[name]):.2f} |")


if __name__ == "__main__":
    main()
