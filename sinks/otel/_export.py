"""The exporter side: OTLP exporters, and a watch on how exports go.

Imported only once the sink opens (it imports the OpenTelemetry SDK). Batching stays in
the SDK's ``BatchSpanProcessor``. :class:`QueueGate` keeps its queue from overflowing;
:class:`WatchedExporter` keeps a batch a failing endpoint did not take and sends it again
(the SDK's exporters give up after one timeout), keeps score (for ``Hub.status()``), and
refuses to start new exports after a close deadline, so a dead endpoint cannot hold the
hub's close hostage to retries.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from rlobs import require

from . import _address, _connect

_slot = threading.local()
_PERMANENT = re.compile(r"batch code: 4(?!29)\d\d|Failed to encode|Dropping span batch|"
                        r"INVALID_ARGUMENT|PERMISSION_DENIED|UNAUTHENTICATED|UNIMPLEMENTED")
"""What the SDK's exporters log when a batch itself was refused (an HTTP 4xx but 429, a
gRPC status no retry changes, a batch that cannot be encoded or is over the size
limit): sending it again cannot help."""


class _LastMessage(logging.Handler):
    """Keeps the exporter's own failure message (e.g. "Connection refused") for the
    export running on this thread: the SDK logs why an export failed but returns only
    FAILURE."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_slot, "capturing", False) and record.levelno >= logging.WARNING:
            _slot.message = record.getMessage()


_handler = _LastMessage()
logging.getLogger("opentelemetry.exporter").addHandler(_handler)


@contextmanager
def _capture() -> Iterator[None]:
    _slot.capturing, _slot.message = True, None
    try:
        yield
    finally:
        _slot.capturing = False


class WatchedExporter(SpanExporter):
    """Wraps an exporter: keeps a batch the endpoint did not take and sends it again
    (1, 2, 4 … 30 s apart) until it goes through, ``retry_s`` of failing passed, or the
    sink closes or gives up; counts exported and failed spans, remembers the last failure.

    Args:
        inner: the exporter doing the work.
        target: where it sends (for status), e.g. the endpoint URL.
        url: the endpoint to probe when an export fails without saying why.
        retry_s: how long exports keep retrying a failing endpoint (``0``: never retry).
    """

    def __init__(self, inner: SpanExporter, target: str, url: str | None = None,
                 retry_s: float = 0.0) -> None:
        self.inner = inner
        self.target = target
        self.url = url
        self.retry_s = retry_s
        self.exported = 0
        self.failed = 0
        self.retrying = 0  # spans of the batch waiting to be sent again
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._deadline: float | None = None
        self._wake = threading.Event()
        self._give_up = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        delay = 1.0
        while True:
            if self._deadline is not None and time.monotonic() > self._deadline:
                return self._failed(len(spans), "not sent: the sink closed before the "
                                    "exporter caught up")
            message, permanent = self._send(spans)
            if message is None:
                self.exported += len(spans)
                self.failing_since = None
                return SpanExportResult.SUCCESS
            if permanent:  # sending the same batch again cannot help
                return self._failed(len(spans), message)
            self._failing(message)
            assert self.failing_since is not None
            left = self.failing_since + self.retry_s - time.monotonic()
            if self._deadline is not None:
                left = min(left, self._deadline - time.monotonic())
            if left <= 0:
                return self._failed(len(spans), message)
            self.retrying = len(spans)
            try:
                self._wake.wait(min(delay, left))
            finally:
                self.retrying = 0
            self._wake.clear()
            if self._give_up:
                self._give_up = False
                return self._failed(len(spans), message)
            delay = min(2 * delay, 30.0)

    def _send(self, spans: Sequence[ReadableSpan]) -> tuple[str | None, bool]:
        """One export through the inner exporter: ``(None, False)`` if it went through,
        else why, and whether the failure is the batch's own (a 4xx answer, a batch that
        cannot be encoded or is too large, an exporter that raised) rather than the
        endpoint's for now (unreachable, timing out, 429, 5xx)."""
        with _capture():
            try:
                result = self.inner.export(spans)
            except Exception as exc:  # an exporter bug must not kill the SDK's thread
                return f"{type(exc).__name__}: {exc}", True
            message = getattr(_slot, "message", None)
        if result is SpanExportResult.SUCCESS:
            return None, False
        if self.url and (message is None or "max retries or shutdown" in message):
            message = f"{message or 'export failed'} ({probe(self.url)})"
        message = message or "the exporter reported a failure"
        return message, _PERMANENT.search(message) is not None

    def _failing(self, why: str) -> None:
        self.last_error = why[:300]
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def _failed(self, count: int, why: str) -> SpanExportResult:
        self.failed += count
        self._failing(why)
        return SpanExportResult.FAILURE

    @property
    def healthy(self) -> bool:
        """Whether the last export went through (or none failed yet)."""
        return self.failing_since is None

    def give_up(self) -> None:
        """Count the batch now being retried as failed, and go on to the next."""
        if self.retrying:
            self._give_up = True
            self._wake.set()

    def stop_after(self, seconds: float) -> None:
        """Fail, without sending, every export that starts later than ``seconds`` from
        now; a batch being retried is given up then."""
        self._deadline = time.monotonic() + seconds
        self._wake.set()

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def describe(self) -> str:
        """A one-line status: where spans go and how exports went."""
        text = f"exporting to {self.target}: {self.exported} spans sent"
        if self.failing_since is not None:
            ago = time.monotonic() - self.failing_since
            held = f", {self.retrying} being retried" if self.retrying else ""
            text += (f"; export failing for {ago:.0f}s ({self.failed} spans lost{held}): "
                     f"{self.last_error}")
        elif self.failed:
            text += f"; {self.failed} spans lost earlier ({self.last_error})"
        return text


class QueueGate(SpanProcessor):
    """In front of the SDK's batch processor: hands it a span only while its queue has
    room — first asking ``make_room`` to wait for some — and counts the others as
    refused, where the SDK would drop its oldest span with nothing but a log line. Room
    is judged from what the watch saw exported or failed, so spans in flight count as
    queued: the gate refuses a little early, never late.

    Args:
        inner: the batch processor.
        watch: the exporter it exports through.
        capacity: the processor's ``max_queue_size``.
        make_room: called when the queue is full, on the thread ending the span.
    """

    def __init__(self, inner: SpanProcessor, watch: WatchedExporter, capacity: int,
                 make_room: Callable[[], None] = lambda: None) -> None:
        self.inner = inner
        self.watch = watch
        self.capacity = capacity
        self.make_room = make_room
        self.queued = 0
        self.refused = 0

    @property
    def backlog(self) -> int:
        """Spans handed to the processor and neither exported nor failed yet."""
        return self.queued - self.watch.exported - self.watch.failed

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.backlog >= self.capacity:
            self.make_room()
            if self.backlog >= self.capacity:
                self.refused += 1
                return
        self.queued += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def probe(url: str, timeout_s: float = 0.5) -> str:
    """Why an endpoint may not answer: try a TCP connection to its host and port.

    The SDK's retry loop ends with a generic "timeout, max retries" message; a refused or
    unroutable connection is the usual cause and this says which.
    """
    address = _address(url)
    if isinstance(address, str):
        return address
    host, port = address
    return _connect(url, timeout_s) or (
        f"{host}:{port} accepts connections but the export did not go through")


def otlp_exporter(protocol: str, endpoint: str, headers: Mapping[str, str],
                  timeout_s: float) -> SpanExporter:
    """An OTLP span exporter for ``protocol`` (``http/protobuf`` or ``grpc``).

    Raises:
        SinkUnavailable: the exporter package for ``protocol`` is not installed.
    """
    if protocol == "grpc":
        module = require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "otel-grpc")
        exporter: SpanExporter = module.OTLPSpanExporter(
            endpoint=endpoint, headers=tuple(headers.items()) or None, timeout=timeout_s)
        return exporter
    module = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel")
    exporter = module.OTLPSpanExporter(endpoint=endpoint, headers=dict(headers),
                                       timeout=timeout_s)
    return exporter


def otlp_metric_exporter(protocol: str, endpoint: str, headers: Mapping[str, str],
                         timeout_s: float) -> Any:
    """An OTLP metric exporter for ``protocol``, as :func:`otlp_exporter`.

    Raises:
        SinkUnavailable: the exporter package for ``protocol`` is not installed.
    """
    if protocol == "grpc":
        module = require("opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
                         "otel-grpc")
        return module.OTLPMetricExporter(endpoint=endpoint,
                                         headers=tuple(headers.items()) or None,
                                         timeout=timeout_s)
    module = require("opentelemetry.exporter.otlp.proto.http.metric_exporter", "otel")
    return module.OTLPMetricExporter(endpoint=endpoint, headers=dict(headers),
                                     timeout=timeout_s)


def parse_headers(raw: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` syntax (``k=v,k2=v2``, URL-encoded) to a dict."""
    from opentelemetry.util.re import parse_env_headers

    return dict(parse_env_headers(raw, liberal=True))


def bounded(func: Callable[[], Any], timeout_s: float, name: str) -> threading.Thread | None:
    """Run ``func`` on a daemon thread and wait at most ``timeout_s``.

    Returns:
        ``None`` if it finished, else its thread: it keeps going in the background and
        nothing waits for it.
    """
    thread = threading.Thread(target=func, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return thread if thread.is_alive() else None
