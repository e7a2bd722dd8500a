"""MLflow sink benchmark: agent-loop cost per step and drain throughput, side by side.

One local ``mlflow server`` (SQLite, ``--workers 1``: the multi-worker server stalls
~44 ms per keep-alive request) is started by this script and serves every variant:

  (a) plain ``mlflow.log_metrics(..., step=i)``           hot path
  (b) MLflow async logging (``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS``)  hot path + drain
  (c) rlobs ``run.step`` with the MLflow sink              hot path
  (d) a bare single-threaded ``MlflowClient.log_batch`` loop (1000 values per call)  drain
  (e) rlobs with the MLflow sink                           drain (values/s until every
      value is in MLflow, the agent loop running meanwhile)

Every variant logs the same three values per step (step_reward, cumulative_reward,
loss). The rlobs run is checked afterwards: every step of every key exactly once.

    PYTHONPATH=. python benchmarks/bench_mlflow.py              # ~1-2 min
    PYTHONPATH=. python benchmarks/bench_mlflow.py --steps 100000 --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

KEYS = ("step_reward", "cumulative_reward", "loss")


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mlflow server`` on a free loopback port; return it and its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
           f"sqlite:///{workdir / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--serve-artifacts", "--artifacts-destination",
           str(workdir / "artifacts")]
    with (workdir / "server.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("mlflow server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server's whole process group: its workers and job consumers too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its pid is the group id
    proc.wait()


def plain_fluent(url: str, steps: int) -> float:
    """(a) µs per step of synchronous ``mlflow.log_metrics``."""
    import mlflow

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(f"bench-a-{time.time_ns()}")
    with mlflow.start_run():
        total = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            total += 1.0
            mlflow.log_metrics({"step_reward": 1.0, "cumulative_reward": total,
                                "loss": 1.0 / (i + 1)}, step=i)
        return (time.perf_counter() - t0) / steps * 1e6


def mlflow_async(url: str, steps: int) -> tuple[float, float]:
    """(b) µs per step on the caller and values/s drained, MLflow's async logging."""
    import mlflow

    os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
    mlflow.set_tracking_uri(url)
    mlflow.config.enable_async_logging(True)
    mlflow.set_experiment(f"bench-b-{time.time_ns()}")
    try:
        mlflow.start_run()
        total = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            total += 1.0
            mlflow.log_metrics({"step_reward": 1.0, "cumulative_reward": total,
                                "loss": 1.0 / (i + 1)}, step=i, synchronous=False)
        hot = (time.perf_counter() - t0) / steps * 1e6
        mlflow.end_run()  # waits until the async queue is drained
        drain = len(KEYS) * steps / (time.perf_counter() - t0)
    finally:
        mlflow.config.enable_async_logging(False)
        os.environ.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)
    return hot, drain


def bare_log_batch(url: str, steps: int, streams: int = 1) -> float:
    """(d) values/s of ``log_batch`` loops with prebuilt entities, 1000 values per call;
    ``streams`` > 1 runs that many loops concurrently (does pipelining pay here?)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.create_experiment(f"bench-d-{time.time_ns()}")
    run_id = client.create_run(exp).info.run_id
    ms = int(time.time() * 1000)
    points = [Metric(k, float(i), ms, i) for i in range(steps) for k in KEYS]
    lanes = [points[j::streams] for j in range(streams)]

    def send(lane: list[Any]) -> None:
        for first in range(0, len(lane), 1000):
            client.log_batch(run_id, metrics=lane[first:first + 1000], synchronous=True)

    threads = [threading.Thread(target=send, args=(lane,)) for lane in lanes]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(points) / (time.perf_counter() - t0)


def rlobs_sink(url: str, steps: int) -> tuple[float, float, str]:
    """(c, e) µs per ``run.step`` and values/s until all are in MLflow; checks them."""
    import rlobs
    from sinks.mlflow import MlflowSink

    exp = f"bench-e-{time.time_ns()}"
    sink = MlflowSink(url, exp, end_wait_s=600)
    with rlobs.Hub([sink], heartbeat_s=0, end_timeout_s=600) as hub:
        run = hub.run("bench-e").start()
        t0 = time.perf_counter()
        for i in range(steps):
            run.step(1.0, {"loss": 1.0 / (i + 1)})
        hot = (time.perf_counter() - t0) / steps * 1e6
        run.end()  # returns once the sink has every value in MLflow (or 600 s passed)
        drain = len(KEYS) * steps / (time.perf_counter() - t0)
        dropped = hub.status()[0].dropped
    return hot, drain, check_whole(url, run.run_id, steps, dropped)


def check_whole(url: str, rlobs_id: str, steps: int, dropped: int) -> str:
    """"whole" when every key holds every step exactly once, else what is wrong."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exps = [e.experiment_id for e in client.search_experiments()]
    run = client.search_runs(exps, f"tags.`rlobs.run_id` = '{rlobs_id}'")[0]
    for key in KEYS:
        got = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        if got != list(range(steps)):
            return f"{key}: {len(got)} values, {len(set(got))} distinct, hub dropped {dropped}"
    return "whole"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000, help="rlobs / log_batch steps")
    parser.add_argument("--async-steps", type=int, default=1_000, help="steps of (b)")
    parser.add_argument("--plain-steps", type=int, default=50, help="steps of (a)")
    parser.add_argument("--trials", type=int, default=1, help="interleaved trials (medians)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    proc, url = start_server(workdir)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    rows: dict[str, list[float]] = {k: [] for k in ("a", "b", "c", "b_drain", "d", "d2", "e")}
    checks: list[str] = []
    try:
        bare_log_batch(url, 5000)  # a fresh server's first ~10k values are several× slower
        for _ in range(args.trials):
            rows["a"].append(plain_fluent(url, args.plain_steps))
            hot, drain = mlflow_async(url, args.async_steps)
            rows["b"].append(hot)
            rows["b_drain"].append(drain)
            rows["d"].append(bare_log_batch(url, args.steps))
            rows["d2"].append(bare_log_batch(url, args.steps, streams=2))
            hot, drain, check = rlobs_sink(url, args.steps)
            rows["c"].append(hot)
            rows["e"].append(drain)
            checks.append(check)
    finally:
        stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, {k: statistics.median(v) for k, v in rows.items()}, checks)
    return 0 if all(c == "whole" for c in checks) else 1


def report(args: Any, m: dict[str, float], checks: list[str]) -> None:
    print(f"# steps={args.steps} async_steps={args.async_steps} plain_steps={args.plain_steps}"
          f" trials={args.trials} (medians); 3 values per step; one local mlflow server")
    print("\n| agent-loop cost per step | µs | rlobs is cheaper by |")
    print("|---|---:|---:|")
    print(f"| (a) `mlflow.log_metrics` sync | {m['a']:,.1f} | {m['a'] / m['c']:,.0f}× |")
    print(f"| (b) MLflow async logging | {m['b']:,.1f} | {m['b'] / m['c']:,.0f}× |")
    print(f"| (c) rlobs `run.step` + MLflow sink | {m['c']:,.2f} | 1× |")
    print("\n| drain (values/s reaching the server) | values/s | rlobs / this |")
    print("|---|---:|---:|")
    print(f"| (d) bare `log_batch` loop, 1000 per call | {m['d']:,.0f} | "
          f"{m['e'] / m['d']:.2f} |")
    print(f"| (d') two concurrent `log_batch` loops | {m['d2']:,.0f} | "
          f"{m['e'] / m['d2']:.2f} |")
    print(f"| (b) MLflow async logging | {m['b_drain']:,.0f} | {m['e'] / m['b_drain']:.2f} |")
    print(f"| (e) rlobs MLflow sink | {m['e']:,.0f} | 1.00 |")
    print(f"\nrlobs run arrived: {', '.join(checks)}")


if __name__ == "__main__":
    sys.exit(main())
