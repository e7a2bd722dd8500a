"""Many processes, one run: worker processes log child runs under one parent run id."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from rlobs import Hub, RunStatus, read_run

WORKERS = 8
STEPS = 10_000

pytestmark = pytest.mark.slow


def _worker(index: int, parent_id: str, directory: str) -> None:
    """One worker process: its own hub, one child run of ``parent_id``."""
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False,
             env={"RLOBS_JSONL_DIR": directory}) as hub, \
            hub.run(f"rollout-worker{index}", parent=parent_id,
                    tags={"worker": str(index)}) as run:
        for k in range(STEPS):
            run.step(1.0, {"worker": index, "k": k}, done=(k % 500 == 499))


def test_workers_log_every_step_exactly_once_under_one_parent(tmp_path: Path) -> None:
    """8 spawned processes × 10k steps: every step lands once, in its worker's child run."""
    directory = tmp_path / "runs"
    ctx = multiprocessing.get_context("spawn")  # the parent's hub threads must not be forked
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False,
             env={"RLOBS_JSONL_DIR": str(directory)}) as hub, \
            hub.run("rollout", params={"workers": WORKERS}) as parent:
        procs = [ctx.Process(target=_worker, args=(i, parent.run_id, str(directory)))
                 for i in range(WORKERS)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [p.exitcode for p in procs] == [0] * WORKERS
    children = [log for p in directory.glob("*.jsonl")
                if (log := read_run(p)).start.run_id != parent.run_id]
    assert len(children) == WORKERS
    assert {c.start.parent_id for c in children} == {parent.run_id}
    seen = Counter((int(s.metrics["worker"]), int(s.metrics["k"]))
                   for c in children for s in c.steps)
    assert len(seen) == WORKERS * STEPS and set(seen.values()) == {1}
    for child in children:
        end = child.end
        assert end is not None and end.status is RunStatus.FINISHED
        assert (end.steps, end.episodes, dict(end.dropped)) == (STEPS, STEPS // 500, {})
        assert [s.step for s in child.steps] == list(range(STEPS))
