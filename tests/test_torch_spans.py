"""rlobs.torch spans: one per call, with batch size, backend, device and fallback reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch_modules import FailsWhenScripted, Small, Unscriptable

import rlobs
from rlobs import Span
from rlobs.testing import RecordingSink
from rlobs.torch import instrument


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def hub(sink: RecordingSink) -> Iterator[rlobs.Hub]:
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub:
        yield hub


def _spans(hub: rlobs.Hub, sink: RecordingSink) -> list[Span]:
    assert hub.flush()
    return sink.of_type(Span)


def test_one_span_per_call_with_its_attributes(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """Each call records one span named for the method, with batch size and backend."""
    actor = instrument(Small(), backend="script", method="greedy")
    with hub.run("spans"), torch.inference_mode():
        for batch in (1, 4, 7):
            actor(torch.randn(batch, 4))
    spans = _spans(hub, sink)
    assert [s.name for s in spans] == ["actor.greedy"] * 3
    assert [s.attributes for s in spans] == [
        {"backend": "script", "device": "cpu", "compiled": True, "batch_size": b}
        for b in (1, 4, 7)]
    assert all(s.end_ns >= s.start_ns > 0 and s.error is None for s in spans)


def test_a_single_observation_counts_as_batch_one(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """A 1-D input (one observation, no batch dimension) is recorded as batch size 1."""
    actor = instrument(Small(), backend="eager")
    with hub.run("unbatched"):
        actor(torch.randn(4))
    assert _spans(hub, sink)[0].attributes["batch_size"] == 1


def test_span_name_can_be_chosen(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """``name=`` sets the span name."""
    actor = instrument(Small(), backend="eager", name="policy.act")
    with hub.run("named"):
        actor(torch.randn(1, 4))
    assert [s.name for s in _spans(hub, sink)] == ["policy.act"]


def test_spans_belong_to_the_step_they_precede(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """A call between step k-1 and step k is a span of step k."""
    actor = instrument(Small(), backend="eager")
    with hub.run("steps") as run:
        for t in range(3):
            actor(torch.randn(1, 4))
            run.step(float(t))
    assert [s.step for s in _spans(hub, sink)] == [0, 1, 2]


def test_fallback_reason_is_on_every_span(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """After a fallback, spans say eager, not compiled, and why."""
    actor = instrument(Unscriptable(), backend="script")
    with hub.run("fallback"):
        actor(torch.randn(2, 4))
    attrs = _spans(hub, sink)[0].attributes
    assert (attrs["backend"], attrs["compiled"]) == ("eager", False)
    assert attrs["fallback_reason"] == actor.fallback_reason


def test_fallback_at_call_is_recorded_on_that_span(hub: rlobs.Hub,
                                                    sink: RecordingSink) -> None:
    """The call whose compiled run failed already reports the fallback to eager."""
    actor = instrument(FailsWhenScripted(), backend="script")
    with hub.run("fallback-at-call"):
        actor(torch.randn(2, 4))
    attrs = _spans(hub, sink)[0].attributes
    assert attrs["backend"] == "eager"
    assert "only the scripted module fails" in attrs["fallback_reason"]


def test_a_raising_call_records_an_error_span(hub: rlobs.Hub, sink: RecordingSink) -> None:
    """A call that raises (the caller's bad input) records a span with the error."""
    actor = instrument(Small(), backend="eager")
    with hub.run("error"), pytest.raises(RuntimeError):
        actor(torch.randn(2, 5))
    span = _spans(hub, sink)[0]
    assert span.error is not None and span.error.startswith("RuntimeError: ")


def test_no_span_without_a_sink_that_wants_spans() -> None:
    """With no span-taking sink, calls record nothing (and steps still flow)."""
    sink = RecordingSink(wants_spans=False)
    actor = instrument(Small(), backend="eager")
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("quiet") as run:
        actor(torch.randn(1, 4))
        run.step(1.0)
        assert hub.flush()
    assert sink.of_type(Span) == [] and len(sink.of_type(rlobs.Step)) == 1


def test_no_current_run_records_nothing_and_returns_outputs() -> None:
    """Outside any run the actor just runs."""
    model = Small()
    actor = instrument(model, backend="eager")
    x = torch.randn(3, 4)
    torch.testing.assert_close(actor(x), model(x))


def test_explicit_run_receives_spans_outside_with(hub: rlobs.Hub,
                                                   sink: RecordingSink) -> None:
    """``run=`` sends spans to that run even when it is not the current one."""
    run = hub.run("explicit").start()
    actor = instrument(Small(), backend="eager", run=run)
    actor(torch.randn(1, 4))
    run.end()
    assert [s.run_id for s in _spans(hub, sink)] == [run.run_id]


def test_timed_returns_latency_and_records_the_span(hub: rlobs.Hub,
                                                    sink: RecordingSink) -> None:
    """``timed()`` returns output and latency in ms matching the span's duration."""
    model = Small()
    actor = instrument(model, backend="eager")
    x = torch.randn(2, 4)
    with hub.run("timed"):
        output, latency_ms = actor.timed(x)
    span = _spans(hub, sink)[0]
    torch.testing.assert_close(output, model(x))
    assert latency_ms == (span.end_ns - span.start_ns) / 1e6


def test_timed_works_without_a_run() -> None:
    """``timed()`` outside a run still measures the call."""
    result = instrument(Small(), backend="eager").timed(torch.randn(1, 4))
    assert result.latency_ms > 0.0
