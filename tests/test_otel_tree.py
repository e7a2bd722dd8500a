"""The exported span tree equals the run log's parents, in every shipped pattern.

Each run goes through the shipper's OTel sink to a real OTLP/HTTP receiver; the tree it
receives is checked span by span against the parents recorded in the JSONL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver, ReceivedSpan

import rlobs
from rlobs import Run, TraceIds
from rlobs.integrations import traced
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow


def _hub(receiver: OtlpReceiver) -> rlobs.Hub:
    return rlobs.Hub(["jsonl", OtelSink(receiver.url)], heartbeat_s=0, provenance=False)


def exported_tree(receiver: OtlpReceiver, runs_dir: Path, run: Run) -> dict[int, ReceivedSpan]:
    """Wait for the run's spans; assert they form the log's tree; return them by id."""
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    ids = run.trace_ids
    wanted = {ids.run_span, *(ids.step(s.step) for s in log.steps),
              *(ids.span(s.span_id) for s in log.spans)}
    deadline = time.monotonic() + 30
    while True:  # other runs' spans may arrive too
        spans = {s.span_id: s for s in receiver.spans if s.span_id in wanted}
        if len(spans) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(spans) == len(wanted), sorted(s.name for s in spans.values())
    assert {s.trace_id for s in spans.values()} == {ids.trace_id}
    parent_run = log.start.parent_id
    assert spans[ids.run_span].parent_id == (
        TraceIds.of(parent_run, None, ids.trace_key).run_span if parent_run else None)
    for step in log.steps:
        assert spans[ids.step(step.step)].parent_id == ids.run_span
    for span in log.spans:
        got = spans[ids.span(span.span_id)]
        # A span after the last step (no step came for it) hangs off the run.
        step = ids.step(span.step) if span.step < len(log.steps) else ids.run_span
        want = ids.span(span.parent_span_id) if span.parent_span_id else step
        assert got.parent_id == want, span
        assert (got.start_ns, got.end_ns) == (span.start_ns, span.end_ns)
    return spans


def _names(spans: dict[int, ReceivedSpan], parent: ReceivedSpan) -> list[str]:
    return sorted(s.name for s in spans.values() if s.parent_id == parent.span_id)


def test_instrumented_actor_nests_under_the_user_span(receiver: OtlpReceiver,
                                                      runs_dir: Path) -> None:
    """An instrument()ed actor called inside run.span("policy") is that span's child."""
    torch = pytest.importorskip("torch")
    from rlobs.torch import instrument

    actor = instrument(torch.nn.Linear(4, 2), backend="eager")
    with _hub(receiver) as hub, hub.run("actor-in-span") as run, torch.inference_mode():
        for _ in range(5):
            with run.span("policy"):
                actor(torch.randn(1, 4))
            run.step(1.0)
    spans = exported_tree(receiver, runs_dir, run)
    policies = [s for s in spans.values() if s.name == "policy"]
    assert len(policies) == 5
    assert all(_names(spans, p) == ["actor.forward"] for p in policies)


def test_nested_traced_calls_keep_their_parents(receiver: OtlpReceiver,
                                                runs_dir: Path) -> None:
    """@traced inside @traced inside run.span: each is the child of the one around it."""
    @traced("tool.lookup", kind="tool")
    def lookup(key: str) -> str:
        return key.upper()

    @traced("plan", kind="chain")
    def plan(goal: str) -> list[str]:
        return [lookup(goal), lookup(goal[::-1])]

    with _hub(receiver) as hub, hub.run("nested") as run:
        for turn in range(3):
            with run.span("agent.turn"):
                plan(f"goal{turn}")
            run.step(0.0)
    spans = exported_tree(receiver, runs_dir, run)
    turns = [s for s in spans.values() if s.name == "agent.turn"]
    assert all(_names(spans, t) == ["plan"] for t in turns)
    for p in (s for s in spans.values() if s.name == "plan"):
        assert _names(spans, p) == ["execute_tool lookup"] * 2


def test_concurrent_asyncio_tasks_keep_their_own_turns(receiver: OtlpReceiver,
                                                      runs_dir: Path) -> None:
    """5 tasks in one run, steps interleaving: every llm/tool span stays in its task's turn."""
    @traced("llm.generate", kind="llm")
    async def generate(delay: float) -> str:
        await asyncio.sleep(delay)
        return "ok"

    @traced("tool.search", kind="tool")
    async def search(delay: float) -> str:
        await asyncio.sleep(delay)
        return "docs"

    async def agent(run: Run, index: int) -> None:
        for turn in range(4):
            with run.span("agent.turn", agent=index, turn=turn):
                await search(0.001 * (index + 1))
                await generate(0.002 * (5 - index))
                run.step(1.0)  # another task's step lands between children and parents

    async def main(run: Run) -> None:
        await asyncio.gather(*(agent(run, i) for i in range(5)))

    with _hub(receiver) as hub, hub.run("agents") as run:
        asyncio.run(main(run))
    spans = exported_tree(receiver, runs_dir, run)
    turns = [s for s in spans.values() if s.name == "agent.turn"]
    assert len(turns) == 20
    for turn in turns:
        assert _names(spans, turn) == ["execute_tool search", "llm.generate"]


def test_threads_in_one_run_keep_their_own_parents(receiver: OtlpReceiver,
                                                   runs_dir: Path) -> None:
    """Worker threads of one run each nest their spans under their own outer span."""
    def work(run: Run, index: int) -> None:
        for _ in range(3):
            with run.span("rollout", worker=index):
                with run.span("env.step"):
                    time.sleep(0.001)
                with run.span("actor.forward"):
                    time.sleep(0.001)
            run.step(0.5)

    with _hub(receiver) as hub, hub.run("threads") as run:
        threads = [threading.Thread(target=work, args=(run, i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    spans = exported_tree(receiver, runs_dir, run)
    for rollout in (s for s in spans.values() if s.name == "rollout"):
        assert _names(spans, rollout) == ["actor.forward", "env.step"]


def test_as_step_span_is_filed_under_its_own_step(receiver: OtlpReceiver,
                                                  runs_dir: Path) -> None:
    """@traced(as_step=True) call k is a child of step k and lies inside it."""
    @traced("model.generate", as_step=True, kind="llm")
    def generate(prompt: str) -> str:
        time.sleep(0.002)
        return prompt[::-1]

    with _hub(receiver) as hub, hub.run("as-step") as run:
        for k in range(3):
            generate(f"prompt {k}")
    spans = exported_tree(receiver, runs_dir, run)
    ids = run.trace_ids
    for k in range(3):
        step = spans[ids.step(k)]
        (call,) = [s for s in spans.values() if s.parent_id == step.span_id]
        assert call.name == "model.generate"
        assert step.start_ns <= call.start_ns <= call.end_ns <= step.end_ns


def test_ids_follow_from_the_run_id() -> None:
    """Trace and span ids are pure functions of the run id and the recorded ids."""
    ids = TraceIds("run-1", "run-1")
    again = TraceIds("run-1", "run-1")
    assert (ids.trace_id, ids.run_span, ids.step(3), ids.span(7)) == \
        (again.trace_id, again.run_span, again.step(3), again.span(7))
    other = TraceIds("run-2", "run-2")
    assert other.trace_id != ids.trace_id and other.span(7) != ids.span(7)
    assert 0 < ids.trace_id < 2**128 and 0 < ids.span(7) < 2**64
    assert TraceIds("run-1", "run-1", segment=5).span(7) != ids.span(7)


def test_shipped_async_agents_example(receiver: OtlpReceiver, runs_dir: Path) -> None:
    """examples/async_agents.py: in every agent's trace, step k holds its own
    model.generate (an LLM span) and lies around it; tools hang off their steps."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RLOBS_SINKS": "jsonl,otel", "RLOBS_JSONL_DIR": str(runs_dir),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(root / "examples" / "async_agents.py"),
                           "--agents", "3", "--turns", "4"], cwd=runs_dir.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logs = [rlobs.read_run(p) for p in sorted(runs_dir.glob("*.jsonl"))]
    expected = sum(1 + len(log.steps) + len(log.spans) for log in logs)
    spans = {s.span_id: s for s in receiver.wait_for(expected)}
    assert len(spans) == expected
    agents = [log for log in logs if log.start.name.startswith("agents-agent")]
    assert len(agents) == 3
    for log in agents:
        ids = TraceIds.of_start(log.start)
        for k in range(4):
            step = spans[ids.step(k)]
            children = [s for s in spans.values() if s.parent_id == step.span_id]
            (generate,) = [s for s in children if s.name == "model.generate"]
            assert generate.attributes["openinference.span.kind"] == "LLM"
            assert step.start_ns <= generate.start_ns <= generate.end_ns <= step.end_ns
            assert sorted(s.name for s in children) == [
                "execute_tool calculator", "execute_tool search", "model.generate"]


def test_a_child_runs_span_inside_a_parents_span(receiver: OtlpReceiver,
                                                 runs_dir: Path) -> None:
    """A child run's span opened inside its parent run's span is a top span of the child
    (the parent's span is of another run and trace), under the child's step."""
    with _hub(receiver) as hub, hub.run("parent") as parent:
        with parent.span("dispatch"):
            with hub.run("child", parent=parent) as child:
                with child.span("work"):
                    pass
                child.step(1.0)
        parent.step(0.0)
    (work,) = rlobs.read_run(runs_dir / f"{child.run_id}.jsonl").spans
    assert work.parent_span_id is None
    spans = exported_tree(receiver, runs_dir, child)
    assert spans[child.trace_ids.span(work.span_id)].parent_id == child.trace_ids.step(0)
