"""Deterministic ids: a replay re-exports the same trace, and third-party OpenTelemetry
instrumentation in the training process lands under the rlobs span or step it runs in."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import OtlpReceiver

import rlobs
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow


@pytest.fixture
def http_server() -> Iterator[str]:
    """A loopback HTTP server answering every GET with 200."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _play(hub: rlobs.Hub) -> rlobs.Run:
    with hub.run("replayed") as run:
        for k in range(4):
            with run.span("actor.forward"), run.span("actor.mlp"):
                pass
            run.step(float(k))
    return run


def test_replay_re_exports_the_same_ids(receiver: OtlpReceiver, runs_dir: Path) -> None:
    """Live export and two replays of the same log send the very same trace and span ids."""
    with rlobs.Hub(["jsonl", OtelSink(receiver.url)], heartbeat_s=0,
                   provenance=False) as hub:
        run = _play(hub)
    live = {(s.trace_id, s.span_id, s.parent_id) for s in receiver.wait_for(1 + 4 + 8)}
    assert len(live) == 13
    log = runs_dir / f"{run.run_id}.jsonl"
    for _ in range(2):
        before = len(receiver.spans)
        rlobs.sync([log], [OtelSink(receiver.url)], force=True, timeout_s=30)
        again = receiver.wait_for(before + 13)[before:]
        assert {(s.trace_id, s.span_id, s.parent_id) for s in again} == live
    assert {s.trace_id for s in receiver.spans} == {run.trace_ids.trace_id}


def _instrument(receiver: OtlpReceiver) -> Any:
    """requests instrumented on a provider of its own, exporting to the receiver."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(receiver.url)))
    RequestsInstrumentor().instrument(tracer_provider=provider)
    return provider


def test_instrumented_http_client_nests_under_the_rlobs_span(
        receiver: OtlpReceiver, http_server: str, runs_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With RLOBS_OTEL_CONTEXT=1, an instrumented requests call inside run.span("tool")
    is that span's child, and one between spans is the step's child, in the run's trace."""
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    monkeypatch.setenv("RLOBS_OTEL_CONTEXT", "1")
    provider = _instrument(receiver)
    try:
        with rlobs.Hub(["jsonl", OtelSink(receiver.url)], heartbeat_s=0,
                       provenance=False) as hub, hub.run("http-agent") as run:
            for k in range(3):
                with run.span("tool.fetch"):
                    requests.get(f"{http_server}/doc/{k}", timeout=5).close()
                requests.get(f"{http_server}/after/{k}", timeout=5).close()
                run.step(1.0)
    finally:
        RequestsInstrumentor().uninstrument()
        provider.shutdown()
    spans = receiver.wait_for(1 + 3 + 3 + 6)
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    ids = run.trace_ids
    by_id = {s.span_id: s for s in spans}
    gets = [s for s in spans if s.name == "GET"]
    assert len(gets) == 6 and {s.trace_id for s in spans} == {ids.trace_id}
    for k, tool in enumerate(log.spans):
        inside, after = gets[2 * k], gets[2 * k + 1]
        assert inside.parent_id == ids.span(tool.span_id)
        assert by_id[inside.parent_id].name == "execute_tool fetch"
        assert after.parent_id == ids.step(k) and by_id[after.parent_id].name == f"step {k}"


def test_use_otel_context_follows_each_task(receiver: OtlpReceiver) -> None:
    """use_otel_context: spans of a tracer of the user's own nest under the rlobs span
    open in their own thread."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("user")
    opened: dict[str, int] = {}

    def worker(run: rlobs.Run, name: str) -> None:
        with rlobs.use_otel_context(run), run.span(name) as scope:
            opened[name] = scope.span_id
            with tracer.start_as_current_span(f"user-{name}"):
                pass

    with rlobs.Hub([OtelSink(exporter=InMemorySpanExporter())], heartbeat_s=0,
                   provenance=False) as hub, hub.run("threads") as run:
        threads = [threading.Thread(target=worker, args=(run, f"w{i}")) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    provider.shutdown()
    ids = run.trace_ids
    for span in exporter.get_finished_spans():
        name = span.name.removeprefix("user-")
        assert span.parent is not None and span.parent.span_id == ids.span(opened[name])
        assert span.context.trace_id == ids.trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN
