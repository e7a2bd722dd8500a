"""Optional OpenTelemetry metrics: steps, rewards and span latencies, aggregated.

Imported only when metrics are on (it imports the OpenTelemetry SDK). Instruments carry
the run's *family* (its name up to the first ``-``, ``/`` or ``:``) and, for latencies, the
span's name — never a run id, which would make one time series per run. LLM calls'
token counts also go to GenAI's ``gen_ai.client.token.usage`` histogram (labelled by
``gen_ai.token.type``, ``gen_ai.operation.name``, ``gen_ai.request.model``).
"""

from __future__ import annotations

import math

from opentelemetry.metrics import MeterProvider

from rlobs import Span, Step


class RunMetrics:
    """The sink's instruments on ``provider`` (its own, never the global one)."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("rlobs")
        self._steps = meter.create_counter(
            "rlobs.steps", unit="{step}", description="Agent steps recorded")
        self._reward = meter.create_histogram(
            "rlobs.reward", description="Reward of each step")
        self._latency = meter.create_histogram(
            "rlobs.span.duration", unit="s", description="Duration of timed sections "
            "(rlobs spans such as actor.forward)")
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Tokens used by LLM calls (input and output)")

    def step(self, event: Step, run_family: str) -> None:
        """Count a step and record its reward."""
        labels = {"rlobs.run_family": run_family}
        self._steps.add(1, labels)
        if math.isfinite(event.reward):
            self._reward.record(event.reward, labels)

    def span(self, event: Span, run_family: str) -> None:
        """Record a span's duration."""
        self._latency.record(max(0, event.end_ns - event.start_ns) / 1e9,
                             {"rlobs.run_family": run_family, "rlobs.span.name": event.name})
        self._usage(event)

    def _usage(self, event: Span) -> None:
        """Record an LLM call's tokens (GenAI semantic conventions)."""
        attrs = event.attributes
        for key, kind in (("gen_ai.usage.input_tokens", "input"),
                          ("gen_ai.usage.output_tokens", "output")):
            value = attrs.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                labels = {"gen_ai.token.type": kind, "gen_ai.operation.name": "chat",
                          "gen_ai.request.model": str(attrs.get("gen_ai.request.model", ""))}
                self._tokens.record(value, labels)
