"""OpenTelemetry sink: each run becomes a trace (run → step → span) sent over OTLP.

Spans are built on the sink's worker thread from the events' recorded timestamps — never
on the agent's thread, where the SDK would cost ~25 µs per span — with their own
``TracerProvider`` (the global one belongs to the application) and the SDK's
``BatchSpanProcessor``. See ``docs/otel.md`` for the span model and the attributes.

Standard variables (explicit constructor arguments win): ``OTEL_EXPORTER_OTLP_ENDPOINT``
(base URL, ``/v1/traces`` appended for HTTP), ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used
as is), ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``, ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``
(``http/protobuf``, default, or ``grpc``), ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``
(seconds, as the Python SDK reads it; default 3), ``OTEL_SERVICE_NAME`` (default
``rlobs``), ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
``OTEL_SDK_DISABLED``, ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, ``OTEL_BSP_MAX_QUEUE_SIZE``
(spans the batch processor holds; default 8192). Its own:
:data:`RLOBS_OTEL_STEP_SPANS`, :data:`RLOBS_OTEL_STEP_EVERY`,
:data:`RLOBS_OTEL_MAX_PENDING_SPANS`, :data:`RLOBS_OTEL_METRICS`,
:data:`RLOBS_OTEL_TRACE_STEPS`, :data:`RLOBS_OTEL_RETRY_S`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rlobs import (
    Artifact,
    ConfigError,
    Delivery,
    RunEnd,
    RunStart,
    RunUpdate,
    Sink,
    SinkUnavailable,
    Span,
    Step,
    TraceIds,
    env_bool,
    env_float,
    env_int,
    require,
)

from ._sampling import StepSampling

if TYPE_CHECKING:
    from ._export import QueueGate, WatchedExporter
    from ._tracer import RunTracer

__all__ = ["OtelSink", "StepSampling"]

RLOBS_OTEL_STEP_SPANS = "RLOBS_OTEL_STEP_SPANS"
"""Steps ``0 .. N-1`` of a run each get a span. Default ``1000``."""
RLOBS_OTEL_STEP_EVERY = "RLOBS_OTEL_STEP_EVERY"
"""After those, step ``k`` gets a span when ``k % EVERY == 0``; ``0``: none. Default ``100``.
Spans of steps without a span are dropped and counted (``rlobs.spans_skipped``)."""
RLOBS_OTEL_TRACE_STEPS = "RLOBS_OTEL_TRACE_STEPS"
"""Live traces: steps ``0 .. W-1`` are in the run's own trace (shown when the run ends);
each later window of ``W`` steps is a trace of its own, sent when its last step arrives,
its root linked to the run span. ``0``: one trace per run. Default ``100``. A child run
stays whole in its parent's trace. Set the same
value in the training process when using :data:`rlobs.environment_variables.RLOBS_OTEL_CONTEXT`."""
RLOBS_OTEL_MAX_PENDING_SPANS = "RLOBS_OTEL_MAX_PENDING_SPANS"
"""Spans one run may hold while they wait for their step, parent or trace root; past it
they are sent at once (their ids and parents unchanged). Default ``10000``."""
RLOBS_OTEL_RETRY_S = "RLOBS_OTEL_RETRY_S"
"""How long spans the endpoint did not take are sent again (1, 2, 4 … 30 s apart) before
they are counted lost; meanwhile the sink takes no more spans than its queue holds (in the
shipper, the log waits). ``0``: never retry. Default ``300``, the shipper's linger."""
RLOBS_OTEL_METRICS = "RLOBS_OTEL_METRICS"
"""``1`` to also send OTel metrics (steps counter, reward and span-duration histograms,
labelled by run family, never run id) every 10 s to the OTLP metrics endpoint.
Default ``0``."""

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOLS = ("http/protobuf", "grpc")
_QUEUE = 8192
"""Spans the SDK's batch processor holds by default (``OTEL_BSP_MAX_QUEUE_SIZE``)."""
_DEFAULT_BASE = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}


def _parse_plain(raw: str) -> dict[str, str]:
    """``k=v,k2=v2`` (the OTel variables' syntax, URL-decoded) without importing the SDK."""
    from urllib.parse import unquote

    out = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


def _address(url: str) -> tuple[str, int] | str:
    """``url``'s host and port, or why it has none."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        return f"bad endpoint {url}: {exc}"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad port in {url}"
    return parts.hostname or "localhost", port


def _connect(url: str, timeout_s: float) -> str | None:
    """``None`` if ``url``'s host and port accept a TCP connection, else why not."""
    import socket

    address = _address(url)
    if isinstance(address, str):
        return address
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return None
    except OSError as exc:
        return f"cannot connect to {address[0]}:{address[1]}: {exc.strerror or exc}"


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


class OtelSink(Sink):
    """Sends each run as an OpenTelemetry trace over OTLP.

    Args:
        endpoint: the traces URL (HTTP: ``http://host:4318/v1/traces``; gRPC:
            ``http://host:4317``); default from the environment.
        headers: extra request headers (e.g. ``x-mlflow-experiment-id``), over the
            environment's.
        exporter: a ready ``SpanExporter`` (e.g. an in-memory one) instead of OTLP.
        protocol: ``"http/protobuf"`` or ``"grpc"`` (needs ``rlobs[otel-grpc]``).
        service_name: the resource's ``service.name``.
        export_timeout_s: bound on one export request, retries included.
        sampling: which steps get a span (:class:`StepSampling`).
        window_steps: steps per live trace (see :data:`RLOBS_OTEL_TRACE_STEPS`).
        flush_timeout_s: how long a run's end waits for its spans to be sent.
        retry_s: how long a failing endpoint is retried (see :data:`RLOBS_OTEL_RETRY_S`).
        close_timeout_s: how long closing waits for the last spans to be sent.
        metrics: also send OTel metrics (see :data:`RLOBS_OTEL_METRICS`).
        metric_reader: a ready ``MetricReader`` (e.g. an in-memory one); implies
            ``metrics``.
        env: the environment to read unset options from (default ``os.environ``).

    Raises:
        ConfigError: ``protocol`` is not one the sink speaks.
    """

    name = "otel"
    flush_interval_s = 0.2
    shipper = True

    def __init__(self, endpoint: str | None = None, *, headers: Mapping[str, str] | None = None,
                 exporter: Any = None, protocol: str | None = None,
                 service_name: str | None = None, export_timeout_s: float | None = None,
                 sampling: StepSampling | None = None, flush_timeout_s: float = 2.0,
                 close_timeout_s: float = 3.0, metrics: bool | None = None,
                 metric_reader: Any = None, env: Mapping[str, str] | None = None,
                 window_steps: int | None = None, retry_s: float | None = None) -> None:
        env = os.environ if env is None else env
        self.protocol = protocol or _first(
            env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ) or "http/protobuf"
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"OTLP protocol {self.protocol!r} is not supported; "
                              f"use one of {', '.join(PROTOCOLS)}")
        self._explicit_endpoint = endpoint
        self.endpoint = endpoint or self._endpoint_from(env)
        self._env_headers = _first(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                                   "OTEL_EXPORTER_OTLP_HEADERS") or ""
        self.headers = dict(headers or {})
        self.exporter = exporter
        self.service_name = service_name or _first(env, "OTEL_SERVICE_NAME") or "rlobs"
        self.export_timeout_s = export_timeout_s or env_float(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            env_float("OTEL_EXPORTER_OTLP_TIMEOUT", 3.0, minimum=0.001, env=env),
            minimum=0.001, env=env)
        self.disabled = env_bool("OTEL_SDK_DISABLED", False, env=env)
        self.resource_attributes = _first(env, "OTEL_RESOURCE_ATTRIBUTES") or ""
        self.flush_timeout_s = flush_timeout_s
        self.close_timeout_s = close_timeout_s
        self.retry_s = env_float(RLOBS_OTEL_RETRY_S, 300.0, minimum=0.0, env=env) \
            if retry_s is None else max(0.0, float(retry_s))
        self._read_limits(env, sampling)
        self.window_steps = env_int(RLOBS_OTEL_TRACE_STEPS, 100, env=env) \
            if window_steps is None else max(0, int(window_steps))
        self._read_metrics(env, metrics, metric_reader)
        self._provider: Any = None
        self._meters: Any = None
        self._watch: WatchedExporter | None = None
        self._tracer: RunTracer | None = None
        self._gate: QueueGate | None = None
        self._closing = False
        self._stalled = -1  # spans sent or failed when waiting last gave up
        self._flusher: threading.Thread | None = None

    def _read_limits(self, env: Mapping[str, str], sampling: StepSampling | None) -> None:
        """What bounds a run's trace: step sampling, held spans, attribute limits."""
        self.sampling = sampling or StepSampling(
            first=env_int(RLOBS_OTEL_STEP_SPANS, 1000, env=env),
            every=env_int(RLOBS_OTEL_STEP_EVERY, 100, env=env))
        self.max_pending_spans = env_int(RLOBS_OTEL_MAX_PENDING_SPANS, 10000, env=env)
        self.max_open_runs = 256
        self.attribute_limit = env_int("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 128, minimum=32,
                                       env=env)
        self.max_length = env_int("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", 4096, minimum=16,
                                  env=env)
        self.queue_size = env_int("OTEL_BSP_MAX_QUEUE_SIZE", _QUEUE, minimum=64, env=env)

    def _read_metrics(self, env: Mapping[str, str], metrics: bool | None,
                      metric_reader: Any) -> None:
        self.metric_reader = metric_reader
        self.metrics = metric_reader is not None or (
            env_bool(RLOBS_OTEL_METRICS, False, env=env) if metrics is None else metrics)
        self.metrics_endpoint = _first(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (
            self.endpoint if self.protocol == "grpc"
            else self.endpoint.removesuffix("/v1/traces").rstrip("/") + "/v1/metrics")

    def _endpoint_from(self, env: Mapping[str, str]) -> str:
        traces = _first(env, TRACES_ENDPOINT)
        if traces:
            return traces
        base = _first(env, ENDPOINT) or _DEFAULT_BASE[self.protocol]
        return base if self.protocol == "grpc" else f"{base.rstrip('/')}/v1/traces"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OtelSink:
        return cls(env=env)

    def ship_env(self) -> dict[str, str] | None:
        """This sink's configuration as the variables :meth:`from_env` reads; ``None``
        for a sink given a ready exporter or metric reader (those stay in-process)."""
        if self.exporter is not None or self.metric_reader is not None or self.disabled:
            return None  # in-process (a disabled SDK says so there, at open)
        from urllib.parse import quote

        headers = ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(
            {**_parse_plain(self._env_headers), **self.headers}.items()))
        return {
            TRACES_ENDPOINT: self.endpoint, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": self.protocol,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": headers, "OTEL_EXPORTER_OTLP_HEADERS": "",
            "OTEL_SERVICE_NAME": self.service_name,
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": repr(self.export_timeout_s),
            RLOBS_OTEL_STEP_SPANS: str(self.sampling.first),
            RLOBS_OTEL_STEP_EVERY: str(self.sampling.every),
            RLOBS_OTEL_MAX_PENDING_SPANS: str(self.max_pending_spans),
            RLOBS_OTEL_TRACE_STEPS: str(self.window_steps),
            RLOBS_OTEL_METRICS: "1" if self.metrics else "0",
            RLOBS_OTEL_RETRY_S: repr(self.retry_s),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": self.metrics_endpoint,
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": str(self.attribute_limit),
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": str(self.max_length),
            "OTEL_BSP_MAX_QUEUE_SIZE": str(self.queue_size),
            "OTEL_RESOURCE_ATTRIBUTES": self.resource_attributes,
        }

    @classmethod
    def selected_by_default(cls, env: Mapping[str, str]) -> bool:
        """On when an OTLP endpoint variable is set (and the SDK is not disabled)."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        return bool(_first(env, ENDPOINT, TRACES_ENDPOINT))

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        if self.disabled:
            raise SinkUnavailable("OTEL_SDK_DISABLED is set: OpenTelemetry is switched off")
        require("opentelemetry.sdk.trace", "otel")
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        from ._export import QueueGate, parse_headers
        from ._tracer import FixedIds, RunTracer

        headers = {**parse_headers(self._env_headers), **self.headers}
        self._watch = self._watched_exporter(headers)
        resource = Resource.create({**_parse_plain(self.resource_attributes),
                                    "service.name": self.service_name})
        # Our own provider: never the global one; no atexit hook (the hub closes us).
        ids = FixedIds()
        self._provider = TracerProvider(
            sampler=ALWAYS_ON, resource=resource, id_generator=ids,
            shutdown_on_exit=False,
            span_limits=SpanLimits(max_span_attributes=self.attribute_limit,
                                   max_attribute_length=self.max_length))
        self._gate = QueueGate(BatchSpanProcessor(
            self._watch, max_queue_size=self.queue_size, schedule_delay_millis=1000,
            max_export_batch_size=min(512, self.queue_size)), self._watch, self.queue_size,
            make_room=self._keep_up)
        self._provider.add_span_processor(self._gate)
        self._tracer = RunTracer(
            self._provider.get_tracer("rlobs"), ids, self.sampling,
            attribute_limit=self.attribute_limit, max_length=self.max_length,
            max_open_runs=self.max_open_runs, max_pending_spans=self.max_pending_spans,
            window_steps=self.window_steps,
            metrics=self._open_metrics(resource, headers) if self.metrics else None)

    def _watched_exporter(self, headers: Mapping[str, str]) -> WatchedExporter:
        from ._export import WatchedExporter, otlp_exporter

        if self.exporter is not None:
            return WatchedExporter(self.exporter, type(self.exporter).__name__,
                                   retry_s=self.retry_s)
        inner = otlp_exporter(self.protocol, self.endpoint, headers, self.export_timeout_s)
        return WatchedExporter(inner, self.endpoint, self.endpoint, retry_s=self.retry_s)

    def _open_metrics(self, resource: Any, headers: Mapping[str, str]) -> Any:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from ._export import otlp_metric_exporter
        from ._metrics import RunMetrics

        reader = self.metric_reader or PeriodicExportingMetricReader(
            otlp_metric_exporter(self.protocol, self.metrics_endpoint, headers,
                                 self.export_timeout_s),
            export_interval_millis=10_000, export_timeout_millis=self.export_timeout_s * 1000)
        self._meters = MeterProvider(metric_readers=[reader], resource=resource,
                                     shutdown_on_exit=False)
        return RunMetrics(self._meters)

    def close(self) -> None:
        from ._export import bounded

        self._closing = True
        if self._tracer is not None:
            self._tracer.end_all("the sink closed while the run was open")
        if self._watch is not None and self._provider is not None:
            # New exports stop halfway through the budget; one in flight ends by its timeout.
            self._watch.stop_after(self.close_timeout_s / 2)
            if bounded(self._provider.shutdown, self.close_timeout_s, "rlobs-otel-close"):
                self._watch.last_error = "shutdown did not finish in time; spans abandoned"
        if self._meters is not None:
            bounded(self._meters.shutdown, self.close_timeout_s, "rlobs-otel-metrics-close")

    # ------------------------------------------------------------------ events

    def on_run_start(self, event: RunStart) -> None:
        assert self._tracer is not None
        self._tracer.start(event)

    def on_step(self, event: Step) -> None:
        assert self._tracer is not None
        self._tracer.step(event)

    def on_span(self, event: Span) -> None:
        assert self._tracer is not None
        self._tracer.span(event)

    def on_run_update(self, event: RunUpdate) -> None:
        assert self._tracer is not None
        self._tracer.update(event)

    def on_artifact(self, event: Artifact) -> None:
        assert self._tracer is not None
        self._tracer.artifact(event)

    def on_run_end(self, event: RunEnd) -> None:
        assert self._tracer is not None
        self._tracer.end(event)
        self._flush_bounded()

    def delivery(self, run_id: str) -> Delivery:
        """Spans built and not yet exported (over every run: the SDK batches across
        runs), and spans lost: their export failed, or the SDK's queue had no room."""
        if self._tracer is None or self._watch is None:
            return Delivery()
        backlog = self._backlog()
        if backlog > 0 and self._watch.healthy:
            # Sent in the background: the shipper's main thread asks, and must not wait
            # (it also notices writers that died).
            self._start_flush(0.0)
        assert self._gate is not None
        lost = self._watch.failed + self._gate.refused
        return Delivery(max(0, backlog), lost, self._lost_detail() if lost else None)

    def _lost_detail(self) -> str:
        assert self._watch is not None and self._gate is not None
        parts = []
        if self._watch.failed:
            parts.append(f"{self._watch.failed} spans not exported: {self._watch.last_error}")
        if self._gate.refused:
            parts.append(self._refused())
        return "; ".join(parts)

    def _refused(self) -> str:
        assert self._gate is not None
        return f"{self._gate.refused} spans refused: the exporter's queue of " \
            f"{self.queue_size} was full"

    def _backlog(self) -> int:
        assert self._gate is not None
        return self._gate.backlog

    def flush(self) -> None:
        """Keep the SDK's queue from overflowing (see :meth:`_keep_up`)."""
        if self._tracer is not None and self._watch is not None:
            self._keep_up()

    def _keep_up(self) -> None:
        """Backpressure: while half the SDK's queue waits, wait for it to be sent before
        taking more spans — as long as flushes make progress (within two export timeouts
        of each other) or the exporter is retrying a batch (at most ``retry_s``). This
        holds the sink's worker, never the agent's loop: in-process the hub's queue
        absorbs or drops and counts steps; in the shipper the log simply waits to be
        read. A closing sink, or an endpoint given up on, is not waited for (what the
        queue cannot take is refused and counted)."""
        watch = self._watch
        assert watch is not None
        if self._stalled == watch.exported + watch.failed:
            return  # gave up waiting, and nothing was sent since: refuse at once
        deadline = time.monotonic() + 2 * self.export_timeout_s
        while self._backlog() >= self.queue_size // 2 and not self._closing:
            before = watch.exported + watch.failed
            if time.monotonic() >= deadline and not watch.retrying:
                self._stalled = before
                return
            self._start_flush(0.0)
            if self._flusher is not None:
                self._flusher.join(0.5)
            if watch.exported + watch.failed != before:
                deadline = time.monotonic() + 2 * self.export_timeout_s
            elif not self._flushing() and not watch.retrying:
                self._stalled = before  # a whole flush sent nothing: not exporting
                return

    def _flushing(self) -> bool:
        return self._flusher is not None and self._flusher.is_alive()

    def _start_flush(self, wait_s: float) -> None:
        """Send what the SDK's queue holds, on a thread of its own, and wait at most
        ``wait_s`` for it — unless a flush is in flight already: it takes these spans too,
        and is not waited for here."""
        from ._export import bounded

        if not self._flushing():
            self._flusher = bounded(self._provider.force_flush, wait_s, "rlobs-otel-flush")

    def _flush_bounded(self) -> None:
        """Send the run's spans now, waiting at most ``flush_timeout_s`` (none while the
        endpoint is failing: the exporter retries in the background)."""
        assert self._watch is not None
        if self._watch.healthy:
            self._start_flush(self.flush_timeout_s)

    def abandon(self, run_id: str, reason: str) -> None:
        """The host stopped waiting: a batch being retried is counted lost now."""
        if self._watch is not None:
            self._watch.give_up()

    def start_context(self, event: RunStart) -> dict[str, Any]:
        """The run's trace id and steps per live window, recorded in its start for other
        sinks (the MLflow sink links the traces to its run) and for people reading it."""
        return {"trace_id": TraceIds.of_start(event).trace_hex,
                "window_steps": 0 if event.parent_id else self.window_steps}

    def probe(self) -> str | None:
        """Whether the endpoint answers: ``None`` if a TCP connection to its host and port
        opens within a second, else why not (a ready exporter is not probed)."""
        if self.disabled:
            return "OTEL_SDK_DISABLED is set"
        if self.exporter is not None:
            return None
        return _connect(self.endpoint, 1.0)

    def detail(self) -> str | None:
        if self._watch is None or self._tracer is None:
            return None
        text = self._watch.describe()
        if self._gate is not None and self._gate.refused:
            text += f"; {self._refused()}"
        tracer = self._tracer
        if tracer.untraced_runs or tracer.dropped_spans:
            text += (f"; not traced: {tracer.untraced_runs} runs over the open-run limit, "
                     f"{tracer.dropped_spans} spans over the pending limit")
        return text
