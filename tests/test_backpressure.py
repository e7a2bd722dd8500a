"""Backpressure: bounded queues, counted drops, lifecycle never dropped."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import rlobs
from rlobs import Overflow, RunEnd, RunStart, Step
from rlobs.testing import HangingSink, RecordingSink, SlowSink


def test_stalled_sink_keeps_memory_bounded_and_counts_drops() -> None:
    """100k steps into a stalled sink: memory stays bounded and drops are reported."""
    stalled = HangingSink(capacity=1000)
    tracemalloc.start()
    with rlobs.Hub([stalled], end_timeout_s=0.5, heartbeat_s=0) as hub:
        with hub.run("stalled") as run:
            run.step(0.0)
            assert stalled.entered.wait(5)
            base, _ = tracemalloc.get_traced_memory()
            for t in range(100_000):
                run.step(1.0, {"a": 1.0, "b": 2.0, "c": float(t)})
            grown = tracemalloc.get_traced_memory()[0] - base
        status = hub.status()[0]  # the end handed over the run's last chunk
        stalled.release()
    tracemalloc.stop()
    # Every step it never got is counted, the one stuck in its hook included.
    assert status.dropped == 100_001
    assert status.queued == 0
    assert grown < 5_000_000  # ~1000 queued steps, not 100k
    assert run.result is not None
    assert run.result.dropped == {"hanging": status.dropped}


def test_lifecycle_events_are_never_dropped() -> None:
    """With a full queue, run start/end, updates and artifacts still get queued."""
    slow = SlowSink(delay_s=0.002, capacity=16)
    with rlobs.Hub([slow], heartbeat_s=0, end_timeout_s=30) as hub:
        for i in range(3):
            with hub.run(f"burst-{i}") as run:
                for _ in range(200):
                    run.step(1.0)
                run.set_tags({"i": str(i)})
    assert len(slow.of_type(RunStart)) == 3
    assert len(slow.of_type(RunEnd)) == 3
    assert len(slow.of_type(rlobs.RunUpdate)) == 3
    assert hub.status()[0].dropped > 0
    assert sum(sum(e.dropped.values()) for e in slow.of_type(RunEnd)) == hub.status()[0].dropped


def test_blocking_sink_loses_nothing_when_it_keeps_up() -> None:
    """A sink declaring Overflow.BLOCK makes the producer wait instead of dropping."""
    sink = RecordingSink(capacity=64, overflow=Overflow.BLOCK)
    sink.block_timeout_s = 10.0
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("blocking") as run:
        for t in range(20_000):
            run.step(float(t))
    assert len(sink.of_type(Step)) == 20_000
    assert hub.status()[0].dropped == 0


def test_a_stuck_blocking_sink_does_not_starve_the_others() -> None:
    """A full Overflow.BLOCK sink that is stuck holds steps back at most its bound."""
    stuck = HangingSink("stuck", capacity=8, overflow=Overflow.BLOCK)
    stuck.block_timeout_s = 0.3
    healthy = RecordingSink("healthy")
    with rlobs.Hub([stuck, healthy], heartbeat_s=0, end_timeout_s=0.5) as hub:
        with hub.run("slow-producer") as run:
            for _ in range(20):  # fills the stuck sink's queue, in fewer steps than a chunk
                run.step(1.0)
            assert stuck.entered.wait(5)
            for _ in range(10):  # a slow producer: its steps still reach the healthy sink
                run.step(1.0)
            arrived = healthy.wait_for(lambda s: len(s.of_type(Step)) == 30, timeout_s=5)
        stuck.release()
    assert arrived
    assert run.result is not None and run.result.dropped["stuck"] > 0


_STALLED = """
import os, rlobs
from rlobs.testing import HangingSink

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

stalled = HangingSink(capacity=1000, hooks=("on_step", "on_run_update"))
with rlobs.Hub(["jsonl", stalled], end_timeout_s=0.5, heartbeat_s=0) as hub:
    with hub.run("stalled-1m") as run:
        run.step(0.0)
        assert stalled.entered.wait(30)
        base = rss()
        for t in range(1_000_000):
            run.step(1.0, {"a": 1.0, "b": float(t)})
            if t % 10 == 0:
                run.log_summary({"s": float(t)})
        grown = rss() - base
    status = [s for s in hub.status() if s.name == "hanging"][0]
    stalled.release()
print(grown, status.dropped, run.result.dropped["hanging"], run.result.steps)
"""


def test_a_million_steps_into_a_stalled_sink_stay_bounded_and_counted(
        tmp_path: Path) -> None:
    """1M steps, and an update every 10, into a stalled in-process sink: the training
    process grows by under 64 MB, and every step the sink never got is counted — queued,
    in flight or left behind — in its status and the run's end."""
    done = subprocess.run([sys.executable, "-c", _STALLED], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "RLOBS_JSONL_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    grown, dropped, in_end, steps = map(int, done.stdout.split())
    assert steps == 1_000_001
    assert dropped == in_end == 1_000_001  # all but none: the sink took only the start
    assert grown < 64 * 2**20, f"grew {grown / 2**20:.0f} MB"
