"""A collector slower than the runs, or one that stops answering for a while: the OTel
sink waits for it instead of letting the SDK's queue overflow (which drops spans with
nothing but a log line) or dropping the batches it did not take; what is lost once it
gave up, or what a collector refused as such, is counted."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from otlp_receiver import OtlpReceiver

import rlobs
from rlobs import sync
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow

STEPS = 1500
QUEUE = "256"  # so a few runs of sampled step spans fill the queue many times over


def _spans_per_run() -> int:
    """The run span and a span for each sampled step (the first 1000, then every 100th)."""
    return 1 + len([k for k in range(STEPS) if k < 1000 or k % 100 == 0])


@pytest.fixture
def slow() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver on loopback taking 50 ms over each export."""
    server = OtlpReceiver(delay_s=0.05)
    yield server
    server.close()


def test_the_shipper_waits_for_a_slow_collector(slow: OtlpReceiver, runs_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Three runs shipped by the live shipper through a 256-span queue to a collector
    taking 50 ms per export: every span arrives, once, and each run is complete."""
    monkeypatch.setenv("RLOBS_SHIPPER_IDLE_S", "1")
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"}
    sink = OtelSink(slow.url, env=env)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0, provenance=False) as hub:
        for name in ("a", "b", "c"):
            with hub.run(name) as run:
                for k in range(STEPS):
                    run.step(float(k))
    report = sync([runs_dir], [OtelSink(slow.url, env=env)], timeout_s=120)
    assert report.complete, report
    spans = slow.wait_for(3 * _spans_per_run(), timeout_s=10)
    assert len(spans) == 3 * _spans_per_run()
    assert len({(s.trace_id, s.span_id) for s in spans}) == len(spans)


def test_sync_waits_for_a_slow_collector(slow: OtlpReceiver, runs_dir: Path) -> None:
    """``rlobs sync`` of logs written without the sink: the same wait, nothing lost."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub:
        for name in ("a", "b"):
            with hub.run(name) as run:
                for k in range(STEPS):
                    run.step(float(k))
    env = {**os.environ, "OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"}
    report = sync([runs_dir], ["otel"], env={**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
                                             slow.url}, timeout_s=120)
    assert report.complete, report
    assert [o.delivered for r in report.runs for o in r.sinks] == [STEPS + 2] * 2
    assert len(slow.wait_for(2 * _spans_per_run(), timeout_s=10)) == 2 * _spans_per_run()


def test_a_collector_answering_503_for_a_while_loses_nothing(
        slow: OtlpReceiver, runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector answers 503 for 4 s while the shipper ships (longer than an export's
    own retries): the batches it refused are sent again once it answers, and every span
    arrives, once; the runs are complete."""
    monkeypatch.setenv("RLOBS_SHIPPER_IDLE_S", "1")
    slow.answer = 503
    threading.Timer(4.0, lambda: setattr(slow, "answer", 200)).start()
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"}
    sink = OtelSink(slow.url, export_timeout_s=0.5, env=env)
    began = time.monotonic()
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0, provenance=False) as hub:
        for name in ("a", "b"):
            with hub.run(name) as run:
                for k in range(STEPS):
                    run.step(float(k))
    report = sync([runs_dir], [OtelSink(slow.url, export_timeout_s=0.5, env=env)],
                  timeout_s=120)
    assert report.complete, report
    assert slow.refused > 0 and time.monotonic() - began > 4.0
    spans = slow.wait_for(2 * _spans_per_run(), timeout_s=10)
    assert len(spans) == 2 * _spans_per_run()
    assert len({(s.trace_id, s.span_id) for s in spans}) == len(spans)


def test_a_batch_the_collector_rejects_is_not_retried(slow: OtlpReceiver,
                                                      runs_dir: Path) -> None:
    """A 400 is about the batch, not the collector's health: counted lost at once with
    the collector's answer, not sent again for minutes while the rest waits."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, hub.run("a") as run:
        for k in range(STEPS):
            run.step(float(k))
    slow.answer = 400
    sink = OtelSink(slow.url, export_timeout_s=0.5,
                    env={"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"})
    began = time.monotonic()
    report = sync([runs_dir], [sink], timeout_s=60)
    assert time.monotonic() - began < 20
    (outcome,) = report.runs[0].sinks
    assert outcome.state == "incomplete" and outcome.lost == _spans_per_run()
    assert "code: 400" in (outcome.missing or ""), outcome
    assert slow.refused == -(-_spans_per_run() // 256)  # each batch sent once


def test_retrying_off_an_unreachable_collectors_spans_are_counted(runs_dir: Path) -> None:
    """Nothing listens, and retrying is off: every span is counted lost, with the reason;
    the run is recorded incomplete."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, hub.run("a") as run:
        for k in range(STEPS):
            run.step(float(k))
    sink = OtelSink("http://127.0.0.1:9/v1/traces", export_timeout_s=0.5, retry_s=0,
                    env={"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"})
    report = sync([runs_dir], [sink], timeout_s=3)
    (outcome,) = report.runs[0].sinks
    assert outcome.state == "incomplete" and outcome.lost == _spans_per_run()
    assert "cannot connect to 127.0.0.1:9" in (outcome.missing or "")


class _Hung(SpanExporter):
    """An exporter that never returns until released (a wedged client library)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_spans_a_wedged_exporter_cannot_queue_are_refused_and_counted() -> None:
    """An exporter that hangs: the sink waits two export timeouts once, then refuses
    what the queue cannot take, counted with the reason, where the SDK would drop the
    oldest spans unseen; the hub still closes promptly."""
    exporter = _Hung()
    sink = OtelSink(exporter=exporter, export_timeout_s=0.5, close_timeout_s=1.0,
                    env={"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"})
    hub = rlobs.Hub([sink], heartbeat_s=0, provenance=False)
    with hub, hub.run("a") as run:
        for k in range(STEPS):
            run.step(float(k))
    began = time.monotonic()
    hub.close()
    assert time.monotonic() - began < 10
    (status,) = hub.status()
    assert status.detail is not None
    assert "spans refused: the exporter's queue of 256 was full" in status.detail, status
    refused = int(status.detail.split(" spans refused")[0].rsplit(" ", 1)[-1])
    assert refused >= _spans_per_run() - int(QUEUE)


def test_an_unreachable_collector_is_given_up_when_the_run_is(runs_dir: Path) -> None:
    """Nothing listens, retrying on: the sink holds the spans until sync stops waiting
    for the run (3 s), then they are counted lost and sync returns at once."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, hub.run("a") as run:
        for k in range(STEPS):
            run.step(float(k))
    sink = OtelSink("http://127.0.0.1:9/v1/traces", export_timeout_s=0.5,
                    env={"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"})
    began = time.monotonic()
    report = sync([runs_dir], [sink], timeout_s=3)
    assert 3 <= time.monotonic() - began < 15
    (outcome,) = report.runs[0].sinks
    assert outcome.state == "incomplete" and outcome.lost > 0
