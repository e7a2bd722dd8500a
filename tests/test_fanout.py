"""Fan-out: every sink gets every event of a run, in order."""

from __future__ import annotations

from pathlib import Path

import rlobs
from rlobs import RunEnd, RunStart, RunStatus, Span, Step
from rlobs.testing import RecordingSink


def _loop(run: rlobs.Run, n: int) -> None:
    for t in range(n):
        with run.span("actor.forward", batch_size=1):
            pass
        run.step(float(t), {"loss": 1.0 / (t + 1)}, done=t % 10 == 9)


def test_three_sinks_receive_every_event_in_order() -> None:
    """Three sinks each receive the run start, all steps and spans in order, and the end."""
    sinks = [RecordingSink(f"rec{i}") for i in range(3)]
    with rlobs.Hub(sinks, heartbeat_s=0) as hub, hub.run("fan-out") as run:
        _loop(run, 500)
    for sink in sinks:
        assert isinstance(sink.events[0], RunStart)
        assert isinstance(sink.events[-1], RunEnd)
        assert [s.step for s in sink.of_type(Step)] == list(range(500))
        assert [s.span_id for s in sink.of_type(Span)] == list(range(1, 501))
        assert sink.events == sinks[0].events


def test_step_fields_track_reward_and_episodes() -> None:
    """Cumulative reward, episode index and episode return/length are computed per step."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("episodes") as run:
        for t in range(5):
            run.step(1.0, done=t == 2)
    steps = sink.of_type(Step)
    assert [s.cumulative_reward for s in steps] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s.episode for s in steps] == [0, 0, 0, 1, 1]
    assert (steps[2].episode_return, steps[2].episode_length) == (3.0, 3)
    assert steps[1].episode_return is None
    end = sink.of_type(RunEnd)[0]
    assert (end.steps, end.total_reward, end.episodes) == (5, 5.0, 1)
    assert end.status is RunStatus.FINISHED and end.completed


def test_spans_belong_to_the_step_they_precede() -> None:
    """A span recorded between step k-1 and step k carries step k, with real timing."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("spans") as run:
        run.step(0.0)
        with run.span("outer") as outer:
            outer.set(phase="act")
            with run.span("inner"):
                sum(range(10_000))
        run.step(0.0)
    inner, outer_span = sink.of_type(Span)
    assert (inner.step, outer_span.step) == (1, 1)
    assert inner.parent_span_id == outer_span.span_id
    assert outer_span.attributes == {"phase": "act"}
    assert outer_span.start_ns <= inner.start_ns < inner.end_ns <= outer_span.end_ns
    step1 = sink.of_type(Step)[1]
    assert outer_span.end_ns <= step1.time_ns


def test_span_records_the_error_of_its_block() -> None:
    """An exception inside a span is recorded on the span and still propagates."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("span-error") as run:
        try:
            with run.span("tool.call"):
                raise ValueError("bad tool input")
        except ValueError:
            pass
    (span,) = sink.of_type(Span)
    assert span.error == "ValueError: bad tool input"


def test_no_span_work_when_no_sink_wants_spans() -> None:
    """With no span-taking sink, `run.span` is a shared no-op and nothing is queued."""
    sink = RecordingSink(wants_spans=False)
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("no-spans") as run:
        assert not run.wants_spans
        assert run.span("a") is run.span("b")
        with run.span("a"):
            pass
        assert run.record_span("x", 1, 2) == 0
        run.step(1.0)
    assert sink.of_type(Span) == []
    assert len(sink.of_type(Step)) == 1


def test_run_updates_and_artifacts_reach_sinks(tmp_path: Path) -> None:
    """Params, tags, summary metrics, artifacts and input hashes are delivered as events."""
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("meta") as run:
        run.log_params({"opt": {"lr": 3e-4}})
        run.set_tags({"stage": "eval"})
        run.log_summary({"score": 0.9, "bad": "n/a"})
        run.log_artifact(data)
        digest = run.log_input_hash(data, name="pairs")
    updates = sink.of_type(rlobs.RunUpdate)
    assert updates[0].params == {"opt.lr": 3e-4}
    assert updates[1].tags == {"stage": "eval"}
    assert updates[2].metrics == {"score": 0.9}
    assert updates[3].tags["rlobs.input.pairs.sha256"] == digest
    assert sink.of_type(rlobs.Artifact)[0].path == str(data.resolve())
    assert sink.of_type(RunEnd)[0].rejected == 1


def test_nested_runs_carry_their_parent() -> None:
    """A child run's start names its parent's id."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("sweep") as parent:
        for cell in range(3):
            with hub.run(f"sweep-cell{cell}", parent=parent) as child:
                child.step(1.0)
    starts = sink.of_type(RunStart)
    assert starts[0].parent_id is None
    assert [s.parent_id for s in starts[1:]] == [parent.run_id] * 3


def test_current_run_follows_with_blocks() -> None:
    """`rlobs.current_run()` is the innermost entered run, and None outside."""
    with rlobs.Hub([RecordingSink()], heartbeat_s=0) as hub:
        assert rlobs.current_run() is None
        with hub.run("outer") as outer:
            assert rlobs.current_run() is outer
            with hub.run("inner", parent=outer) as inner:
                assert rlobs.current_run() is inner
            assert rlobs.current_run() is outer
        assert rlobs.current_run() is None


def test_a_quiet_runs_steps_reach_sinks_before_it_ends() -> None:
    """A few steps (less than a chunk) are delivered on the workers' timer, run still open."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("quiet") as run:
        for t in range(3):
            run.step(float(t))
        assert sink.wait_for(lambda s: len(s.of_type(Step)) == 3, timeout_s=5)
        assert not sink.of_type(RunEnd)


def test_a_sink_that_takes_no_spans_gets_every_step_and_no_span() -> None:
    """Spans travel in the run's chunks; a sink that takes none skips them, steps intact."""
    spans, plain = RecordingSink("spans"), RecordingSink("plain", wants_spans=False)
    with rlobs.Hub([spans, plain], heartbeat_s=0) as hub, hub.run("mixed") as run:
        _loop(run, 700)
    assert [s.step for s in plain.of_type(Step)] == list(range(700))
    assert not plain.of_type(Span)
    assert len(spans.of_type(Span)) == 700
    assert hub.status()[1].delivered == 702  # start, 700 steps, end


def test_metrics_are_copied_at_the_call() -> None:
    """A caller reusing one metrics dict gets each step's values as they were at the call."""
    sink = RecordingSink()
    metrics = {"loss": 0.0}
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("reuse") as run:
        for t in range(300):
            metrics["loss"] = float(t)
            run.step(0.0, metrics)
    assert [s.metrics["loss"] for s in sink.of_type(Step)] == [float(t) for t in range(300)]
