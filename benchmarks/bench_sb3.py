"""What logging costs a real training job: SB3 PPO on CartPole-v1, whole-process wall time.

Each trial is a fresh process training PPO (n_steps=1024, torch with 1 thread) for a given
number of timesteps, with:

- ``none``: no logging at all (the baseline);
- ``tensorboard``: SB3's own TensorBoard logger (``tensorboard_log=``);
- ``callback``: the rlobs callback and its run log only (``RLOBS_SINKS=jsonl``: no
  shipper) — what the training process itself pays;
- ``rlobs``: the rlobs callback with the run log, MLflow on the embedded SQLite store
  (the README's default) and OpenTelemetry to a local OTLP receiver — the sinks run in
  the log directory's shipper process; system metrics off;
- ``rlobs+system``: the same with system metrics sampled every ``--system-s`` seconds
  (default 1, ten times the default rate, so their cost shows if there is any);
- ``mlflow-alone``: no logging in the training process; beside it, from the start of
  ``learn()``, a process that does only what the shipper asks of MLflow's client for such
  a run — ``import mlflow``, open the same SQLite store, create a run, ``log_batch`` two
  values a step (1,000 a call) and end the run — with nothing of rlobs: the floor that
  storing the run in MLflow on this machine puts under ``rlobs``.

Trials run in pairs of all modes, in a shuffled order per pair (A/B interleaved), after
one untimed warm-up trial of each mode (``--warmup``); after an rlobs trial the harness
waits, untimed, until its shipper has shipped everything and exited, so no trial shares
the machine with an earlier one's shipper. The trials of a mode log into one directory,
as a user's runs do: the warm-up creates the MLflow store there and the timed runs find
it (creating it costs the shipper ~0.8 s more CPU once). The table gives the median wall
time per mode and the median of the per-pair ratios to ``none`` with their range across
pairs, for the whole process and for ``model.learn()`` alone (the process's start-up,
imports and exit left out), and the CPU seconds the trial's shipper used (its last
status report; for ``mlflow-alone``, its neighbour process's).

    python benchmarks/bench_sb3.py [--timesteps 16384 65536] [--pairs 5] [--warmup 1]
        [--modes none tensorboard callback rlobs rlobs+system mlflow-alone]
        [--system-s 1]
    python benchmarks/bench_sb3.py --inside [--timesteps 16384]
    python benchmarks/bench_sb3.py --alternate [--timesteps 2048] [--pairs 12]
    python benchmarks/bench_sb3.py --neighbour {busy,mlflow} [--timesteps 2048] [--pairs 10]

``--inside`` trains once with the callback and its run log and prints what the hooks
cost per step *inside* ``learn()`` (each timed with ``perf_counter_ns`` around it, the
timer's own ~0.1 µs included): SB3's ``update_locals`` (paid with or without a
callback), the callback's ``_on_step`` and the ``run.step`` it calls.

``--alternate`` times the callback all in, without the noise of separate processes: one
process trains the same model again and again (``learn()`` of ``--timesteps`` each) with
no callback, with the rlobs callback and its run log, and with the callback's start and
end only, in shuffled order; it prints what each costs per step over none.

``--neighbour`` measures what another process's CPU costs the training on this machine,
in one process as ``--alternate``: ``learn()`` of ``--timesteps`` again and again, a
neighbour process running (``SIGCONT``) in half of the rounds and stopped (``SIGSTOP``) in
the others, in shuffled order: ``busy``, a Python loop that never sleeps; ``mlflow``,
``--mlflow-alone``'s MLflow client storing a run's values into SQLite flat out, for a run
that does not end (what the shipper's MLflow sender does). It prints the median ratio of
a running round to a stopped one.

The ``× rlobs`` column compares each mode with ``rlobs`` in the same pair.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("none", "tensorboard", "callback", "rlobs", "rlobs+system", "mlflow-alone")
_NEIGHBOUR_DONE = "mlflow-alone.done"


def _model(**kwargs: Any) -> Any:
    """The trained model: PPO on CartPole-v1, n_steps=1024, torch with 1 thread."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    return PPO("MlpPolicy", "CartPole-v1", n_steps=1024, seed=0, device="cpu", **kwargs)


def _log_only(directory: str) -> None:
    """The callback's run log and nothing else (no shipper, no system metrics)."""
    os.environ.update({"RLOBS_SINKS": "jsonl", "RLOBS_JSONL_DIR": directory,
                       "RLOBS_SYSTEM_METRICS_S": "0"})


def train(mode: str, timesteps: int, directory: str, otlp: str, system_s: float) -> float:
    """One trial (in its own process); returns how long ``learn()`` took."""
    logged = mode.startswith("rlobs") or mode == "callback"
    if logged:
        sinks = "jsonl" if mode == "callback" else "jsonl,mlflow,otel"
        os.environ.update({"RLOBS_SINKS": sinks, "RLOBS_JSONL_DIR": directory,
                           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
                           "RLOBS_SYSTEM_METRICS_S": str(system_s if "system" in mode else 0)})
    kwargs = {"tensorboard_log": directory} if mode == "tensorboard" else {}
    model = _model(**kwargs)
    callback = None
    if logged:
        from rlobs.integrations.sb3 import RlobsCallback

        callback = RlobsCallback()
    if mode == "mlflow-alone":  # not waited for, as a shipper is not
        subprocess.Popen([sys.executable, __file__, "--mlflow-alone", directory,
                          "--timesteps", str(timesteps)], start_new_session=True,
                         stdout=subprocess.DEVNULL)  # the trial's pipe closes with it
    began = time.perf_counter()
    model.learn(timesteps, callback=callback)
    return time.perf_counter() - began


def mlflow_alone(directory: str, timesteps: int) -> None:
    """What the shipper asks of MLflow's client for a run of ``timesteps`` one-env steps,
    done directly (``--mlflow-alone``, beside a ``mlflow-alone`` trial)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{Path(directory) / 'mlflow.db'}")
    found = client.get_experiment_by_name("mlflow-alone")
    experiment = found.experiment_id if found else client.create_experiment("mlflow-alone")
    run_id = client.create_run(experiment).info.run_id
    print("ready", flush=True)  # imported and opened (--neighbour waits for this)
    stamp = int(time.time() * 1000)
    for first in range(0, timesteps, 500):
        client.log_batch(run_id, metrics=[
            metric for step in range(first, min(first + 500, timesteps))
            for metric in (Metric("step_reward", 1.0, stamp, step),
                           Metric("cumulative_reward", float(step), stamp, step))],
            synchronous=True)
    client.set_terminated(run_id)
    (Path(directory) / _NEIGHBOUR_DONE).write_text(f"{time.process_time():.3f}")


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP collector: takes every export, answers 200."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def alternate(timesteps: int, repeats: int, directory: str) -> None:
    """What the callback costs per step all in (``--alternate``): one process, one
    model, ``learn()`` again and again with no callback, the rlobs callback, and the
    callback with an empty ``_on_step`` (its start and end only), in shuffled order."""
    _log_only(directory)
    from rlobs.integrations.sb3 import RlobsCallback

    class StartAndEndOnly(RlobsCallback):
        def _on_step(self) -> bool:
            return True

    makers: dict[str, Any] = {"none": lambda: None, "callback": RlobsCallback,
                              "callback, empty _on_step": StartAndEndOnly}
    model = _model()
    model.learn(1024)  # warm: first-call costs belong to no mode
    took: dict[str, list[float]] = {name: [] for name in makers}
    rng = random.Random(0)
    for _ in range(repeats):
        order = list(makers)
        rng.shuffle(order)
        for name in order:
            began = time.perf_counter()
            model.learn(timesteps, callback=makers[name]())
            took[name].append(time.perf_counter() - began)
    print(f"{repeats} rounds of learn({timesteps:,}) in one process\n")
    print("| mode | median learn() s | × none (median of rounds) | µs per step over none |")
    print("|---|---:|---:|---:|")
    for name, times in took.items():
        ratio = statistics.median(t / b for t, b in zip(times, took["none"], strict=True))
        extra = statistics.median(t - b for t, b in zip(times, took["none"], strict=True))
        print(f"| {name} | {statistics.median(times):.3f} | {ratio:.3f} | "
              f"{extra / timesteps * 1e6:.1f} |")


_BUSY = "while True:\n    pass\n"
_NEIGHBOURS = ("busy", "mlflow")


def neighbour(kind: str, timesteps: int, repeats: int, directory: str) -> None:
    """What another process's CPU costs the training (``--neighbour``)."""
    import signal

    command = ([sys.executable, "-c", _BUSY] if kind == "busy" else  # MLflow flat out
               [sys.executable, __file__, "--mlflow-alone", directory, "--timesteps",
                str(10**12)])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if kind == "mlflow" and process.stdout is not None:
            process.stdout.readline()  # imported and opened: its start-up is not timed
        process.send_signal(signal.SIGSTOP)
        model = _model()
        model.learn(1024)  # warm
        took: dict[str, list[float]] = {"stopped": [], "running": []}
        rng = random.Random(0)
        for _ in range(repeats):
            order = list(took)
            rng.shuffle(order)
            for state in order:
                process.send_signal(signal.SIGCONT if state == "running" else signal.SIGSTOP)
                began = time.perf_counter()
                model.learn(timesteps)
                took[state].append(time.perf_counter() - began)
    finally:
        process.kill()
        process.wait()
    ratios = [r / s for r, s in zip(took["running"], took["stopped"], strict=True)]
    print(f"{repeats} rounds of learn({timesteps:,}) in one process, neighbour {kind!r}\n")
    print("| neighbour | median learn() s, stopped | running | × stopped (median) | range |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {kind} | {statistics.median(took['stopped']):.3f} | "
          f"{statistics.median(took['running']):.3f} | {statistics.median(ratios):.3f} | "
          f"{_range(ratios)} |")


def inside(timesteps: int, directory: str) -> None:
    """Time the per-step hooks inside one training (``--inside``)."""
    _log_only(directory)
    from stable_baselines3.common.callbacks import BaseCallback

    from rlobs._run import Run
    from rlobs.integrations.sb3 import RlobsCallback

    spent = {"update_locals": 0, "_on_step": 0, "run.step": 0}
    calls = 0

    def timed(name: str, fn: Any) -> Any:
        clock = time.perf_counter_ns

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += clock() - began
        return wrapper

    def counted_on_step(self: RlobsCallback) -> bool:
        nonlocal calls
        calls += 1
        return on_step(self)

    on_step = timed("_on_step", RlobsCallback._on_step)
    RlobsCallback._on_step = counted_on_step  # type: ignore[method-assign]
    Run.step = timed("run.step", Run.step)  # type: ignore[method-assign]
    BaseCallback.update_locals = timed(  # type: ignore[method-assign]
        "update_locals", BaseCallback.update_locals)
    model = _model()
    began = time.perf_counter()
    model.learn(timesteps, callback=RlobsCallback())
    took = time.perf_counter() - began
    print(f"learn() of {timesteps:,} timesteps: {took:.2f} s, {calls:,} callback steps\n")
    print("| per step, inside learn() | µs |")
    print("|---|---:|")
    for name, ns in spent.items():
        print(f"| {name} | {ns / max(calls, 1) / 1000:.2f} |")


def _trial(mode: str, timesteps: int, directory: Path, otlp: str,
           system_s: float) -> tuple[float, float, float]:
    """Whole-process wall time, ``learn()`` time and the shipper's CPU time (user +
    system, from its last status report; for ``mlflow-alone`` its neighbour's) of one
    trial."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--timesteps",
                           str(timesteps), "--dir", str(directory), "--otlp", otlp,
                           "--system-s", str(system_s)],
                          check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - began
    shipper_cpu = 0.0
    if mode.startswith("rlobs"):
        shipper_cpu = _wait_for_shipper(directory)
    elif mode == "mlflow-alone":
        marker = directory / _NEIGHBOUR_DONE
        deadline = time.monotonic() + 600
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shipper_cpu = float(marker.read_text())  # the neighbour's, in its place
        marker.unlink()
    learn = float(done.stdout.rsplit("learn=", 1)[1].split()[0])
    return wall, learn, shipper_cpu


def _wait_for_shipper(directory: Path) -> float:
    """Wait until the trial's shipper shipped everything and exited; its CPU seconds."""
    import rlobs
    from rlobs._records import shipper_statuses

    rlobs.sync([directory], timeout_s=600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
            r.get("exited") for r in shipper_statuses(directory)):
        time.sleep(0.2)
    return sum(float(r.get("cpu_s", 0.0)) for r in shipper_statuses(directory))


def _range(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[16_384, 65_536])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed trials of each mode before the pairs")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--system-s", type=float, default=1.0)
    parser.add_argument("--inside", action="store_true",
                        help="time the per-step hooks inside one training")
    parser.add_argument("--alternate", action="store_true",
                        help="time the callback all in: learn() again and again in one "
                             "process, with and without it (--pairs rounds)")
    parser.add_argument("--neighbour", choices=_NEIGHBOURS,
                        help="time the training with another process running beside it "
                             "and stopped, in turn (--pairs rounds)")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--mlflow-alone", metavar="DIR")
    parser.add_argument("--dir")
    parser.add_argument("--otlp")
    args = parser.parse_args()
    if args.mlflow_alone:
        mlflow_alone(args.mlflow_alone, args.timesteps[0])
        return 0
    if args.child:
        learn = train(args.child, args.timesteps[0], args.dir, args.otlp, args.system_s)
        print(f"learn={learn:.6f}")
        return 0
    if args.inside or args.alternate or args.neighbour:
        with tempfile.TemporaryDirectory() as scratch:
            if args.neighbour:
                neighbour(args.neighbour, args.timesteps[0], args.pairs, scratch)
            elif args.inside:
                inside(args.timesteps[0], scratch)
            else:
                alternate(args.timesteps[0], args.pairs, scratch)
        return 0
    os.environ["RLOBS_SHIPPER_IDLE_S"] = "1"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{server.server_address[1]}"
    rng = random.Random(0)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, PPO CartPole-v1, "
          f"n_steps=1024, torch 1 thread, {args.pairs} pairs per size, system metrics "
          f"every {args.system_s:g} s in rlobs+system\n")
    modes = list(dict.fromkeys(["none", *args.modes]))  # the baseline always runs
    print("| timesteps | mode | median wall s | × none (median of pairs) | range | × rlobs | "
          "median learn() s | learn() × none | range | shipper CPU s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for timesteps in args.timesteps:
        walls: dict[str, list[float]] = {m: [] for m in modes}
        learns: dict[str, list[float]] = {m: [] for m in modes}
        cpus: dict[str, list[float]] = {m: [] for m in modes}
        with tempfile.TemporaryDirectory() as scratch:
            for mode in modes:
                (Path(scratch) / mode).mkdir()
            for pair in range(-args.warmup, args.pairs):
                order = list(modes)
                rng.shuffle(order)
                for mode in order:
                    wall, learn, cpu = _trial(mode, timesteps, Path(scratch) / mode, otlp,
                                              args.system_s)
                    if pair >= 0:
                        walls[mode].append(wall)
                        learns[mode].append(learn)
                        cpus[mode].append(cpu)
        for mode in modes:
            ratios = [w / base for w, base in zip(walls[mode], walls["none"], strict=True)]
            vs_rlobs = "–"
            if "rlobs" in walls:
                pairs = zip(walls[mode], walls["rlobs"], strict=True)
                vs_rlobs = f"{statistics.median(w / r for w, r in pairs):.3f}"
            learn_ratios = [w / base for w, base in zip(learns[mode], learns["none"],
                                                        strict=True)]
            print(f"| {timesteps:,} | {mode} | {statistics.median(walls[mode]):.2f} | "
                  f"{statistics.median(ratios):.3f} | {_range(ratios)} | {vs_rlobs} | "
                  f"{statistics.median(learns[mode]):.2f} | "
                  f"{statistics.median(learn_ratios):.3f} | {_range(learn_ratios)} | "
                  f"{statistics.median(cpus[mode]):.2f} |", flush=True)
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
