"""LLM and tool calls: span kinds, GenAI and OpenInference attributes from one call site,
opt-in captured text (redacted, capped), tokens and cost in every sink's metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import OtlpReceiver, ReceivedSpan

import rlobs
from rlobs import RunUpdate, Span, Step
from rlobs.integrations import traced
from rlobs.testing import RecordingSink
from sinks.otel import OtelSink


@pytest.fixture
def prices() -> Iterator[None]:
    rlobs.set_llm_prices({"tiny-llm": (1.0, 4.0)})  # USD per 1M input / output tokens
    yield
    rlobs.set_llm_prices(None)


def _response(text: str, given: int, taken: int) -> dict[str, Any]:
    """An OpenAI-style chat completion."""
    return {"model": "tiny-llm", "choices": [{"finish_reason": "stop",
                                              "message": {"content": text}}],
            "usage": {"prompt_tokens": given, "completion_tokens": taken}}


@traced("llm.chat", kind="llm", model="tiny-llm", capture=True)
def chat(prompt: str) -> dict[str, Any]:
    time.sleep(0.001)
    return _response(f"echo {prompt}", 10 * len(prompt), 7)


@traced("tool.search", kind="tool")
def search(query: str) -> list[str]:
    return [query]


def _spans_by_name(receiver: OtlpReceiver, count: int) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = {}
    for span in receiver.wait_for(count):
        out.setdefault(span.name, []).append(span)
    return out


@pytest.mark.slow
def test_llm_span_has_both_conventions(receiver: OtlpReceiver, prices: None) -> None:
    """One @traced(kind="llm") call gives GenAI and OpenInference attributes, input and
    output, model, tokens and finish reasons, over real OTLP."""
    with rlobs.Hub(["jsonl", OtelSink(receiver.url)], heartbeat_s=0,
                   provenance=False) as hub, hub.run("chatbot") as run:
        chat("hi")
        search("docs")
        run.step(1.0)
    spans = _spans_by_name(receiver, 4)
    attrs = spans["llm.chat"][0].attributes
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == attrs["llm.model_name"] == "tiny-llm"
    assert attrs["gen_ai.usage.input_tokens"] == attrs["llm.token_count.prompt"] == 20
    assert attrs["gen_ai.usage.output_tokens"] == attrs["llm.token_count.completion"] == 7
    assert attrs["llm.token_count.total"] == 27
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["input.value"] == "hi" and attrs["input.mime_type"] == "text/plain"
    assert '"echo hi"' in attrs["output.value"]
    assert attrs["output.mime_type"] == "application/json"
    assert attrs["rlobs.cost_usd"] == pytest.approx((20 * 1.0 + 7 * 4.0) / 1e6)
    tool = spans["execute_tool search"][0].attributes
    assert tool["openinference.span.kind"] == "TOOL"
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "search"
    assert "input.value" not in tool  # capture is opt-in


def _in_memory(sink: RecordingSink) -> rlobs.Hub:
    return rlobs.Hub([sink], heartbeat_s=0, provenance=False)


def test_tokens_and_cost_are_step_and_run_metrics(prices: None) -> None:
    """Calls' tokens and cost are summed into the step they end in and the run's summary."""
    sink = RecordingSink()
    with _in_memory(sink) as hub, hub.run("agent") as run:
        chat("a")
        chat("bb")
        run.step(0.0)
        run.step(0.0)  # no calls: no LLM metrics
        with run.span("llm.raw", kind="llm") as scope:
            scope.llm("tiny-llm", input_tokens=100, output_tokens=50, finish_reasons="length")
        run.step(1.0)
    steps = sink.of_type(Step)
    assert steps[0].metrics["llm.input_tokens"] == 30
    assert steps[0].metrics["llm.output_tokens"] == 14
    assert steps[0].metrics["llm.calls"] == 2
    assert steps[0].metrics["llm.cost_usd"] == pytest.approx((30 + 14 * 4) / 1e6)
    assert "llm.calls" not in steps[1].metrics
    assert steps[2].metrics["llm.cost_usd"] == pytest.approx((100 + 50 * 4) / 1e6)
    (summary,) = [u.metrics for u in sink.of_type(RunUpdate) if u.metrics]
    assert summary["llm.input_tokens_total"] == 130
    assert summary["llm.output_tokens_total"] == 64
    assert summary["llm.calls_total"] == 3
    assert summary["llm.cost_usd_total"] == pytest.approx((130 + 64 * 4) / 1e6)


def test_unpriced_model_counts_tokens_without_cost() -> None:
    """Without a price for the model, tokens are counted and no cost is made up."""
    sink = RecordingSink()
    with _in_memory(sink) as hub, hub.run("agent") as run:
        chat("a")
        run.step(0.0)
    metrics = sink.of_type(Step)[0].metrics
    assert metrics["llm.input_tokens"] == 10 and "llm.cost_usd" not in metrics


def test_captured_text_is_redacted_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Captured input is redacted (credentials) and cut to RLOBS_CAPTURE_MAX_CHARS."""
    monkeypatch.setenv("RLOBS_CAPTURE_MAX_CHARS", "64")
    sink = RecordingSink()
    with _in_memory(sink) as hub, hub.run("agent") as run:
        chat("api_key=sk-live-123456 " + "x" * 500)
        with run.span("fetch", kind="tool") as scope:
            scope.io(input="Authorization: Bearer abcdefghijklmnop", output={"ok": True})
        run.step(0.0)
    spans = {s.name: s for s in sink.of_type(Span)}
    text = spans["llm.chat"].attributes["input.value"]
    assert "sk-live-123456" not in text and "***" in text
    assert len(text) == 64 and text.endswith("…")
    fetch = spans["fetch"].attributes
    assert "abcdefghijklmnop" not in fetch["input.value"]
    assert fetch["output.value"] == '{"ok": true}'


def test_kinds_on_run_span_and_bad_kinds() -> None:
    """run.span(kind=...) takes each kind; an unknown one is counted and kept as a plain
    attribute; @traced refuses it when decorating."""
    sink = RecordingSink()
    with _in_memory(sink) as hub, hub.run("agent") as run:
        for kind in ("retriever", "embedding", "agent", "chain"):
            with run.span(kind, kind=kind):
                pass
        with run.span("odd", kind="banana"):
            pass
        run.step(0.0)
    spans = {s.name: s.attributes for s in sink.of_type(Span)}
    assert spans["retriever"]["rlobs.kind"] == "retriever"
    assert spans["odd"] == {"kind": "banana"}
    assert run.rejected == 1
    with pytest.raises(ValueError, match="banana"):
        traced("x", kind="banana")


def test_otel_kinds_of_each_span() -> None:
    """Each kind becomes its OpenInference kind and GenAI operation in the OTel sink."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    with rlobs.Hub([OtelSink(exporter=exporter)], heartbeat_s=0,
                   provenance=False) as hub, hub.run("agent") as run:
        for kind in ("retriever", "embedding", "agent", "chain", "llm"):
            with run.span(kind, kind=kind):
                pass
        run.step(0.0)
    hub.close()
    got = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert got["retriever"]["openinference.span.kind"] == "RETRIEVER"
    assert got["embedding"]["gen_ai.operation.name"] == "embeddings"
    assert got["agent"]["gen_ai.operation.name"] == "invoke_agent"
    assert got["llm"]["openinference.span.kind"] == "LLM"
    assert "gen_ai.operation.name" not in got["chain"]
    assert "rlobs.kind" not in got["chain"]


def test_jsonl_keeps_what_the_otel_sink_maps(runs_dir: Path) -> None:
    """The run log holds the kind and GenAI fields, so a replay maps them the same way."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, \
            hub.run("agent") as run:
        chat("q")
        run.step(0.0)
    (span,) = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl").spans
    assert span.attributes["rlobs.kind"] == "llm"
    assert span.attributes["gen_ai.usage.input_tokens"] == 10


def test_token_usage_histogram_in_otel_metrics() -> None:
    """With OTel metrics on, LLM tokens go to gen_ai.client.token.usage by type and model."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    sink = OtelSink(exporter=InMemorySpanExporter(), metric_reader=reader)
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("bot") as run:
        chat("abc")
        chat("d")
        run.step(0.0)
        hub.flush()
        data = reader.get_metrics_data()
    assert data is not None
    (usage,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == "gen_ai.client.token.usage"]
    points = {dict(p.attributes or {})["gen_ai.token.type"]: p for p in usage.data.data_points}
    assert (points["input"].count, points["input"].sum) == (2, 40)
    assert (points["output"].count, points["output"].sum) == (2, 14)
    assert dict(points["input"].attributes or {})["gen_ai.request.model"] == "tiny-llm"
