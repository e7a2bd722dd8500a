"""fork is ordinary: under an open run, forked children (os.fork, multiprocessing's fork
start method, torch DataLoader workers) start at once, may log runs of their own, and
leave the parent's run whole."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rlobs


def _child_logs(index: int) -> int:
    """In a forked child: log a run of one's own on the inherited default hub."""
    with rlobs.run(f"child-{index}", tags={"pid": str(os.getpid())}) as run:
        for t in range(100):
            run.step(1.0, {"t": float(t)})
    return index


_inherited: list[rlobs.Run] = []


def _child_touches_parent_run(reply: Any) -> None:
    """In a forked child: the parent's run object is inert here (the parent writes it)."""
    (run,) = _inherited
    run.step(99.0)
    run.log_summary({"from_child": 1.0})
    reply.send(run.ignored)


def test_multiprocessing_fork_children_log_their_own_runs(runs_dir: Path) -> None:
    """Pool workers forked under an open run each log a run; the parent's run is whole."""
    hub = rlobs.default_hub()
    with hub.run("parent") as parent:
        parent.step(1.0)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            assert sorted(pool.map(_child_logs, range(4), chunksize=1)) == [0, 1, 2, 3]
        for _ in range(9):
            parent.step(1.0)
    logs = {log.start.name: log for log in map(rlobs.read_run, runs_dir.glob("*.jsonl"))}
    assert sorted(logs) == ["child-0", "child-1", "child-2", "child-3", "parent"]
    assert len(logs["parent"].steps) == 10 and logs["parent"].end.steps == 10  # type: ignore[union-attr]
    for index in range(4):
        child = logs[f"child-{index}"]
        assert child.end is not None and child.end.status is rlobs.RunStatus.FINISHED
        assert [s.step for s in child.steps] == list(range(100))
        assert child.start.tags["pid"] != str(os.getpid())


def test_a_forked_child_cannot_write_into_the_parents_run(runs_dir: Path) -> None:
    """Steps a child records into an inherited run are ignored and counted, not written
    into the parent's log."""
    ctx = multiprocessing.get_context("fork")
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub, hub.run("parent") as run:
        run.step(1.0)
        _inherited[:] = [run]
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_child_touches_parent_run, args=(theirs,))
        child.start()
        assert ours.poll(30) and ours.recv() == 2
        child.join(30)
        assert child.exitcode == 0
        run.step(1.0)
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    assert [s.reward for s in log.steps] == [1.0, 1.0]
    assert log.end is not None and log.end.steps == 2


_FORKING = """
import os, sys, rlobs
from rlobs.testing import RecordingSink
recording = RecordingSink()
with rlobs.Hub(["jsonl", recording], heartbeat_s=0) as hub, hub.run("parent") as run:
    run.step(1.0)
    pid = os.fork()
    if pid == 0:
        with hub.run("forked") as own:
            own.step(2.0)
        sys.exit(0)  # a normal exit: atexit hooks run in the child
    _, status = os.waitpid(pid, 0)
    run.step(1.0)
print(os.waitstatus_to_exitcode(status), [e.steps for e in recording.of_type(rlobs.RunEnd)])
"""


def test_os_fork_child_exits_cleanly_and_the_parent_carries_on(runs_dir: Path) -> None:
    """A bare os.fork() child under an open run logs its own run and exits normally,
    atexit hooks and all; the parent's run and in-process sinks are unaffected."""
    done = subprocess.run([sys.executable, "-c", _FORKING], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "0 [2]"  # the child's status; the parent's end
    logs = {log.start.name: log for log in map(rlobs.read_run, runs_dir.glob("*.jsonl"))}
    assert sorted(logs) == ["forked", "parent"]
    assert logs["parent"].end is not None and logs["parent"].end.steps == 2
    assert logs["forked"].end is not None and logs["forked"].end.steps == 1
    assert logs["forked"].end.status is rlobs.RunStatus.FINISHED


def test_dataloader_workers_fork_under_an_open_run(runs_dir: Path) -> None:
    """A torch DataLoader with two forked workers iterates under an open run; the run
    records every step and the process exits cleanly."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.arange(64, dtype=torch.float32).reshape(32, 2))
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub, hub.run("loader") as run:
        loader = DataLoader(data, batch_size=4, num_workers=2,
                            multiprocessing_context="fork")
        for epoch in range(2):
            for (batch,) in loader:
                run.step(float(batch.sum()), {"epoch": float(epoch)})
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    assert len(log.steps) == 16 and log.end is not None
    assert log.end.status is rlobs.RunStatus.FINISHED


@pytest.mark.slow
def test_forked_childrens_runs_reach_mlflow_through_the_shipper(
        runs_dir: Path, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Children forked under an open MLflow-logged run write their own logs, and the
    directory's one shipper ships every run to MLflow."""
    from mlflow_support import client, experiment_name, find_run, steps_of

    monkeypatch.setenv("RLOBS_SINKS", "jsonl,mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("RLOBS_MLFLOW_EXPERIMENT", experiment_name())
    test_multiprocessing_fork_children_log_their_own_runs(runs_dir)
    report = rlobs.sync([runs_dir], timeout_s=120)
    assert report.complete and len(report.runs) == 5
    c = client(mlflow_server.url)
    for log in map(rlobs.read_run, runs_dir.glob("*.jsonl")):
        found = find_run(c, log.start.run_id)
        assert found.info.status == "FINISHED"
        assert steps_of(c, found.info.run_id, "step_reward") == list(range(len(log.steps)))
    assert len(list((runs_dir / ".rlobs").glob("shipper-*.lock"))) == 1
