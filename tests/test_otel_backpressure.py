"""A collector slower than the runs: the OTel sink waits for it instead of letting the
SDK's queue overflow (which drops spans with nothing but a log line), and what it
cannot queue is counted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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
def slow() -> OtlpReceiver:
    server = OtlpReceiver(delay_s=0.05)
    yield server  # type: ignore[misc]
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


def test_spans_an_unreachable_collector_cannot_queue_are_counted(runs_dir: Path) -> None:
    """Nothing listens: spans past the queue are refused and counted with the reason, not
    dropped by the SDK unseen; the run is recorded incomplete."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, hub.run("a") as run:
        for k in range(STEPS):
            run.step(float(k))
    sink = OtelSink("http://127.0.0.1:9/v1/traces", export_timeout_s=0.5,
                    env={"OTEL_BSP_MAX_QUEUE_SIZE": QUEUE, "RLOBS_OTEL_TRACE_STEPS": "0"})
    report = sync([runs_dir], [sink], timeout_s=3)
    (outcome,) = report.runs[0].sinks
    assert outcome.state == "incomplete"
    assert outcome.lost >= _spans_per_run() - int(QUEUE)
    assert "refused: the exporter's queue of 256 was full" in (outcome.missing or "")
