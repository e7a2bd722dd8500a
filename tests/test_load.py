"""A saturated machine: 8 busy processes beside the training loop and a one-worker MLflow
server. A 20k-step run and a SIGTERM'd run both end in MLflow with the right status and
every step exactly once, with no user action."""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run, poll
from servers import MlflowServer

import rlobs
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("child_ship.py")


@pytest.fixture
def saturated() -> Iterator[None]:
    """Eight processes spinning for the length of the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(8)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=30)


def _counts(c: object, mlflow_id: str, key: str) -> tuple[int, int]:
    history = c.get_metric_history(mlflow_id, key)  # type: ignore[attr-defined]
    steps = [m.step for m in history]
    return len(steps), len(set(steps))


def test_a_loaded_machine_loses_and_duplicates_nothing(
        saturated: None, mlflow_server: MlflowServer, runs_dir: Path, tmp_path: Path) -> None:
    """Under load, a 20k-step run ends FINISHED and a SIGTERM'd run KILLED in MLflow,
    each with every step of its log exactly once."""
    exp = experiment_name()
    progress = tmp_path / "progress"
    progress.write_bytes(b"\xff" * 8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLOBS_HANDLE_SIGNALS": "1",
           "RLOBS_JSONL_DIR": str(runs_dir), "RLOBS_SINKS": "jsonl,mlflow",
           "MLFLOW_TRACKING_URI": mlflow_server.url, "RLOBS_MLFLOW_EXPERIMENT": exp}
    child = subprocess.Popen([sys.executable, str(CHILD), "20990101-000000-loadterm",
                              str(progress)], env=env, stderr=subprocess.DEVNULL)
    try:
        with rlobs.Hub(["jsonl", MlflowSink(mlflow_server.url, exp)], heartbeat_s=0) as hub, \
                hub.run("loaded-a") as run:
            for t in range(20_000):
                run.step(1.0, {"t": float(t)})

        def stepped() -> bool:
            with progress.open("rb") as handle, mmap.mmap(handle.fileno(), 8,
                                                          access=mmap.ACCESS_READ) as m:
                return int(struct.unpack("<q", m[:8])[0]) > 3000

        assert poll(stepped, 120)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        child.kill()
    report = rlobs.sync([runs_dir], timeout_s=600)
    assert report.complete, report
    c = client(mlflow_server.url)
    finished = find_run(c, run.run_id)
    assert finished.info.status == "FINISHED"
    assert _counts(c, finished.info.run_id, "t") == (20_000, 20_000)
    killed = find_run(c, "20990101-000000-loadterm")
    assert killed.info.status == "KILLED"
    steps = len(rlobs.read_run(runs_dir / "20990101-000000-loadterm.jsonl").steps)
    assert _counts(c, killed.info.run_id, "index") == (steps, steps)
