"""Async users: the same run handle under asyncio and trio (anyio backends)."""

from __future__ import annotations

import anyio
import pytest

import rlobs
from rlobs import RunEnd, RunStatus, Step
from rlobs.testing import RecordingSink

pytestmark = pytest.mark.anyio


async def test_async_with_run_records_and_ends() -> None:
    """`async with hub.run()` starts, records steps from the loop, and ends finished."""
    sink = RecordingSink()
    async with rlobs.Hub([sink], heartbeat_s=0) as hub:
        async with hub.run("async-agent") as run:
            for t in range(100):
                run.step(1.0, {"t": float(t)})
                await anyio.sleep(0)
    assert len(sink.of_type(Step)) == 100
    assert sink.of_type(RunEnd)[0].status is RunStatus.FINISHED


async def test_concurrent_runs_keep_their_own_events() -> None:
    """Concurrent tasks each log to their own run; current_run() follows each task."""
    sink = RecordingSink()
    seen: dict[str, str] = {}

    async def agent(hub: rlobs.Hub, name: str) -> None:
        async with hub.run(name) as run:
            for _ in range(20):
                current = rlobs.current_run()
                assert current is not None
                current.step(1.0)
                await anyio.sleep(0.001)
            seen[name] = run.run_id

    async with rlobs.Hub([sink], heartbeat_s=0) as hub, anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(agent, hub, f"agent-{i}")
    for run_id in seen.values():
        assert len([s for s in sink.of_type(Step) if s.run_id == run_id]) == 20
    assert len(sink.of_type(RunEnd)) == 4


async def test_cancellation_ends_the_run_killed() -> None:
    """A cancelled task's run ends `killed`, even though cleanup awaits."""
    sink = RecordingSink()
    async with rlobs.Hub([sink], heartbeat_s=0) as hub:
        with anyio.move_on_after(0.05):
            async with hub.run("cancelled") as run:
                run.step(1.0)
                await anyio.sleep(10)
    (end,) = sink.of_type(RunEnd)
    assert end.status is RunStatus.KILLED


async def test_exception_in_async_run_ends_failed() -> None:
    """An exception inside `async with` ends the run failed."""
    sink = RecordingSink()
    async with rlobs.Hub([sink], heartbeat_s=0) as hub:
        with pytest.raises(RuntimeError):
            async with hub.run("async-fail"):
                raise RuntimeError("tool crashed")
    assert sink.of_type(RunEnd)[0].error == "RuntimeError: tool crashed"
