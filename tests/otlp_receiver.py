"""A real OTLP/HTTP traces receiver for tests: decodes each export the way a collector does."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One span as it arrived: ids as ints, attributes decoded."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: int
    resource: dict[str, Any]
    links: list[tuple[int, int]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class OtlpReceiver:
    """Listens on 127.0.0.1; ``url`` is its ``/v1/traces`` endpoint. ``delay_s``: how long
    it takes over each export (a slow collector), ``0`` by default; ``answer``: the status
    it answers with, ``200`` by default — any other, and it keeps nothing (a collector
    that is down behind its load balancer). ``refused`` counts those requests."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.answer = 200
        self.refused = 0
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                time.sleep(receiver.delay_s)
                if receiver.answer != 200:
                    receiver.refused += 1
                    self.send_response(receiver.answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver._add(request, dict(self.headers))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def _add(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        out = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    out.append(ReceivedSpan(
                        span.name, int.from_bytes(span.trace_id, "big"),
                        int.from_bytes(span.span_id, "big"),
                        int.from_bytes(span.parent_span_id, "big") or None,
                        span.start_time_unix_nano, span.end_time_unix_nano,
                        {a.key: _value(a.value) for a in span.attributes},
                        span.status.code, resource,
                        [(int.from_bytes(k.trace_id, "big"), int.from_bytes(k.span_id, "big"))
                         for k in span.links],
                        [e.name for e in span.events]))
        with self._lock:
            self.spans.extend(out)
            self.requests += 1
            self.headers.append(headers)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[ReceivedSpan]:
        """The spans received once there are at least ``count`` (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while len(self.spans) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
