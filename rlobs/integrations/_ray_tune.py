"""Ray Tune: the experiment is one parent run, each trial a child run.

``tune.Tuner(..., run_config=tune.RunConfig(callbacks=[RlobsTuneCallback(metric="loss",
mode="min")]))``:

- the experiment opens the parent run when it starts (its params: ``num_samples``, the
  stop criteria, your own ``params``);
- each trial opens a child run when it starts, its config as params;
- every ``tune.report(...)`` is one step of the trial's run, its numeric metrics as the
  step's metrics (Tune's bookkeeping fields other than ``training_iteration``,
  ``time_this_iter_s`` and ``time_total_s`` left out; nested dicts flattened with ``/``);
- a trial's end is its run's status: ``TERMINATED`` → ``finished``, ``ERROR`` →
  ``failed`` (with the error's last line); a trial Tune stopped before its trainable
  returned (a scheduler such as ASHA, or the stop criteria) is ``finished`` and tagged
  ``ray.tune.stopped_early=true``, at ``ray.tune.iterations``;
- when the experiment ends, the parent is tagged with the best trial by ``metric`` and
  ``mode`` (its last reported value, as Tune's ``get_best_result`` does by default).

The callback runs in the driver, where Tune collects every report, so the trials' runs
are written there, in the driver's log directory. A failing hook is logged and
counted, never raised into Tune.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ray.tune import Callback

from .._hub import Hub, default_hub
from .._log import logger
from .._run import Run
from .._values import as_number

KEPT_AUTO = frozenset({"training_iteration", "time_this_iter_s", "time_total_s"})
"""Tune's own result fields kept as step metrics; its other bookkeeping is left out."""
_AUTO = frozenset({
    "done", "timestamp", "trial_id", "date", "pid", "hostname", "node_ip", "config",
    "time_since_restore", "iterations_since_restore", "timesteps_since_restore",
    "experiment_tag", "checkpoint_dir_name", "should_checkpoint", "timesteps_total",
    "episodes_total", "__duplicate__",
})

F = TypeVar("F", bound=Callable[..., None])


def _guarded(hook: F) -> F:
    """One failure boundary per hook: a bug here must not stop the experiment."""
    @functools.wraps(hook)
    def call(self: RlobsTuneCallback, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception as exc:
            self.errors += 1
            if self.errors & (self.errors - 1) == 0:
                logger.warning("tune callback failed", hook=hook.__name__,
                               error=f"{type(exc).__name__}: {exc}", errors=self.errors)
    return call  # type: ignore[return-value]


def result_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """A Tune result's numeric values, nested dicts flattened with ``/``."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if not prefix and key in _AUTO:
            continue
        if isinstance(value, Mapping):
            out.update(result_metrics(value, f"{name}/"))
        elif not isinstance(value, bool) and (number := as_number(value)) is not None:
            out[name] = float(number)
    return out


class RlobsTuneCallback(Callback):
    """Logs a Tune experiment: one parent run, a child run per trial (module docstring).

    Args:
        name: the parent run's name; default ``"tune"``.
        metric: the result key that picks the best trial (tagged on the parent).
        mode: ``"min"`` or ``"max"`` for ``metric``.
        reward: a result key whose value becomes each step's reward (default 0).
        params: extra params of the parent run.
        tags: extra tags of every run.
        hub: the hub to log on; default the process-wide hub from the environment.

    Raises:
        ValueError: ``mode`` is not ``"min"``/``"max"``, or only one of ``metric`` and
            ``mode`` is given.
    """

    def __init__(self, name: str | None = None, *, metric: str | None = None,
                 mode: str | None = None, reward: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 hub: Hub | None = None) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        if (metric is None) != (mode is None):
            raise ValueError("give both metric and mode to tag the best trial, or neither")
        self.name = name or "tune"
        self.metric, self.mode, self.reward = metric, mode, reward
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.errors = 0
        self._hub = hub
        self.parent: Run | None = None
        self.trials: dict[str, Run] = {}
        self._last: dict[str, float] = {}  # trial id → last value of ``metric``
        self._early: set[str] = set()
        self._iterations: dict[str, int] = {}  # reports per trial
        self._ended: dict[str, str] = {}  # trial id → its run's id

    def __getstate__(self) -> dict[str, Any]:
        """Tune saves its callbacks with the experiment's state: leave out the hub and the
        open runs (a restored experiment logs on the restoring process's own hub)."""
        state = dict(self.__dict__)
        state.update(_hub=None, parent=None, trials={})
        return state

    # ------------------------------------------------------------------ Tune's hooks

    @_guarded
    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        """Open the experiment's parent run."""
        hub = self._hub or default_hub()
        params = {"num_samples": num_samples, "total_num_samples": total_num_samples,
                  "stop": stop if stop is None or isinstance(stop, Mapping) else repr(stop),
                  **self.params}
        if self.metric is not None:
            params.update(metric=self.metric, mode=self.mode)
        self.parent = hub.run(self.name, params=params,
                              tags={"ray.tune.role": "experiment", **self.tags}).start()
        self.trials.clear()
        self._last.clear()
        self._early.clear()
        self._iterations.clear()
        self._ended.clear()

    @_guarded
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any,
                       **info: Any) -> None:
        """Open the trial's run (a restarted trial keeps its open run)."""
        self._trial_run(trial)

    @_guarded
    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        """One step of the trial's run per report."""
        run = self._trial_run(trial)
        metrics = result_metrics(result)
        reward = metrics.get(self.reward, 0.0) if self.reward else 0.0
        run.step(reward, metrics)
        trial_id = str(trial.trial_id)
        self._iterations[trial_id] = self._iterations.get(trial_id, 0) + 1
        if self.metric is not None and self.metric in metrics:
            self._last[trial_id] = metrics[self.metric]
        if result.get("done"):  # Tune decided to stop it: the trainable did not return
            self._early.add(trial_id)

    @_guarded
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        """End the trial's run ``finished`` (``ray.tune.stopped_early`` if Tune stopped it)."""
        trial_id = str(trial.trial_id)
        self._end(trial, "finished", None, {
            "ray.tune.trial_status": "TERMINATED",
            "ray.tune.stopped_early": str(trial_id in self._early).lower()})

    @_guarded
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any,
                       **info: Any) -> None:
        """End the trial's run ``failed``, with the last line of its error."""
        self._end(trial, "failed", _error_text(trial), {"ray.tune.trial_status": "ERROR"})

    @_guarded
    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Tag the best trial on the parent and end it (trials still open end killed)."""
        for trial_id, run in list(self.trials.items()):
            if run.active:
                run.end("killed", "the experiment ended while the trial was open")
            del self.trials[trial_id]
        parent = self.parent
        if parent is None:
            return
        best = self._best()
        if best is not None and self.metric is not None:
            trial_id, value, run_id = best
            parent.set_tags({"ray.tune.best_trial_id": trial_id,
                             "ray.tune.best_run_id": run_id})
            parent.log_summary({f"best_{self.metric}": value})
        parent.log_summary({"trials": float(len(trials))})
        parent.end()
        self.parent = None

    # ------------------------------------------------------------------ internals

    def _trial_run(self, trial: Any) -> Run:
        trial_id = str(trial.trial_id)
        run = self.trials.get(trial_id)
        if run is not None and run.active:
            return run
        hub = self._hub or default_hub()
        tags = {"ray.tune.role": "trial", "ray.tune.trial_id": trial_id, **self.tags}
        path = getattr(trial, "path", None)
        if path:
            tags["ray.tune.trial_path"] = str(path)
            tags["ray.tune.experiment"] = Path(str(path)).parent.name
        run = hub.run(str(trial), params=dict(trial.config or {}), tags=tags,
                      parent=self.parent).start()
        self.trials[trial_id] = run
        return run

    def _end(self, trial: Any, status: str, error: str | None, tags: dict[str, str]) -> None:
        trial_id = str(trial.trial_id)
        run = self.trials.pop(trial_id, None)
        if run is None:
            run = self._trial_run(trial)  # an error before the trial's first result
            self.trials.pop(trial_id)
        tags["ray.tune.iterations"] = str(self._iterations.get(trial_id, 0))
        run.set_tags(tags)
        run.end(status, error)
        self._ended[trial_id] = run.run_id

    def _best(self) -> tuple[str, float, str] | None:
        """(trial id, last value of ``metric``, run id) of the best trial, if any."""
        values = [(t, v) for t, v in self._last.items() if not math.isnan(v)]
        if not values or self.mode is None:
            return None
        pick = min if self.mode == "min" else max
        trial_id, value = pick(values, key=lambda item: item[1])
        return trial_id, value, self._ended.get(trial_id, "")


def _error_text(trial: Any) -> str:
    """The last line of a trial's error file (``Type: message``), or a generic text."""
    try:
        lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "the trial failed"
    except Exception:  # no error file (storage elsewhere), unreadable
        return "the trial failed"
