"""Plain-function runs (``task``) and traced tool/model calls in concurrent agent loops."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import anyio
import pytest

import rlobs
from rlobs import Hub, RunEnd, RunStart, RunStatus, RunUpdate, Span, Step
from rlobs.integrations import task, traced
from rlobs.testing import RecordingSink


@pytest.fixture
def hub_sink() -> Iterator[tuple[Hub, RecordingSink]]:
    sink = RecordingSink()
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        yield hub, sink


def test_task_decorator_makes_each_call_a_run(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Each call is a run named after the function, its scalar arguments its params."""
    hub, sink = hub_sink

    @task(hub=hub)
    def episode(seed: int, horizon: int = 3) -> float:
        run = rlobs.current_run()
        assert run is not None
        for _ in range(horizon):
            run.step(1.0)
        return 3.0

    assert episode(1) == 3.0 and episode(2) == 3.0
    starts = sink.of_type(RunStart)
    assert [s.params for s in starts] == [{"seed": 1, "horizon": 3}, {"seed": 2, "horizon": 3}]
    assert starts[0].name.endswith("episode")
    assert [e.steps for e in sink.of_type(RunEnd)] == [3, 3]
    assert sink.of_type(RunUpdate)[0].metrics == {"result": 3.0}


def test_task_that_raises_ends_failed(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """An exception ends the task's run failed and reaches the caller."""
    hub, sink = hub_sink

    @task("flaky", hub=hub)
    def flaky() -> None:
        raise ValueError("no luck")

    with pytest.raises(ValueError, match="no luck"):
        flaky()
    assert sink.of_type(RunEnd)[0].status is RunStatus.FAILED


def test_task_inside_a_run_is_its_child(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A task started while a run is current becomes that run's child."""
    hub, sink = hub_sink
    with hub.run("sweep") as parent, task("cell", hub=hub, params={"lr": 0.1}) as child:
        child.step(1.0)
    starts = {s.name: s for s in sink.of_type(RunStart)}
    assert starts["cell"].parent_id == parent.run_id
    assert starts["cell"].params == {"lr": 0.1}


def test_traced_call_outside_a_run_runs_untouched(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Without a current run a traced function just runs."""
    _, sink = hub_sink

    @traced("tool.add")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5 and sink.events == []


def test_traced_as_step_records_reward_and_error(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """With ``as_step`` each call is a step: reward from the result, error flag on raise."""
    hub, sink = hub_sink

    @traced("model.score", as_step=True, reward=lambda r: r * 2)
    def score(x: float) -> float:
        if x < 0:
            raise ValueError("negative")
        return x

    with hub.run("agent"):
        score(1.5)
        with pytest.raises(ValueError):
            score(-1)
    steps = sink.of_type(Step)
    assert [(s.reward, s.metrics["error"]) for s in steps] == [(3.0, 0.0), (0.0, 1.0)]
    spans = sink.of_type(Span)
    assert [s.error for s in spans] == [None, "ValueError: negative"]


@traced("tool.lookup", kind="tool")
async def _lookup(query: str) -> str:
    await anyio.sleep(0)
    return query.upper()


@traced("model.generate", as_step=True, reward=len)
async def _generate(prompt: str) -> str:
    await anyio.sleep(0)
    return prompt + "!"


async def _agent(hub: Hub, name: str, turns: int) -> None:
    async with hub.run(name):
        for turn in range(turns):
            await _lookup(f"{name}-{turn}")
            await anyio.sleep(0)  # let the other agents interleave
            await _generate(name)


@pytest.mark.anyio
async def test_concurrent_agent_runs_keep_their_events(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Agents in one task group each keep every span and step under their own run."""
    hub, sink = hub_sink
    turns = {"alpha": 3, "beta": 5, "gamma": 7}
    async with anyio.create_task_group() as tg:
        for name, n in turns.items():
            tg.start_soon(_agent, hub, name, n)
    ids = {s.run_id: s.name for s in sink.of_type(RunStart)}
    for name, n in turns.items():
        spans = [s for s in sink.of_type(Span) if ids[s.run_id] == name]
        steps = [s for s in sink.of_type(Step) if ids[s.run_id] == name]
        assert len(spans) == 2 * n and len(steps) == n
        assert {s.reward for s in steps} == {len(name) + 1.0}
        kinds = {s.attributes.get("rlobs.kind") for s in spans if s.name == "tool.lookup"}
        assert kinds == {"tool"}


def test_asyncio_gather_keeps_runs_apart(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """``asyncio.gather`` of agent runs: each run receives exactly its own steps."""
    hub, sink = hub_sink

    async def main() -> None:
        await asyncio.gather(*(_agent(hub, f"agent{i}", i + 1) for i in range(4)))

    asyncio.run(main())
    by_run = {e.run_id: e.steps for e in sink.of_type(RunEnd)}
    names = {s.run_id: s.name for s in sink.of_type(RunStart)}
    assert {names[r]: n for r, n in by_run.items()} == {f"agent{i}": i + 1 for i in range(4)}


def test_failing_reward_function_does_not_break_the_call(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A reward function that raises gives a NaN reward; the call's result is returned."""
    hub, sink = hub_sink

    @traced("model.call", as_step=True, reward=lambda r: 1 / 0)
    def call() -> str:
        return "ok"

    with hub.run("agent"):
        assert call() == "ok"
    assert math.isnan(sink.of_type(Step)[0].reward)
