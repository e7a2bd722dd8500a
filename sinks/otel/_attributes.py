"""Span names and attributes for rlobs events, in the conventions trace viewers read.

Pure Python (no OpenTelemetry import): the sink feeds these mappings to the SDK.

- Run span: OpenTelemetry GenAI ``invoke_agent`` (``gen_ai.operation.name``,
  ``gen_ai.agent.name``, ``gen_ai.agent.id``) and OpenInference ``AGENT``.
- Step span: OpenInference ``CHAIN``; RL fields under ``rlobs.``.
- Span event: of the kind it was given (``run.span(..., kind="llm")``; the OpenInference
  kind, upper case, and for ``llm``/``tool``/``agent``/``embedding`` the GenAI operation
  ``chat``/``execute_tool``/``invoke_agent``/``embeddings``); without one, a tool call
  when it carries a ``tool`` (or ``gen_ai.tool.name``) attribute or its name starts with
  ``tool.``, an LLM call when it carries a model or token usage, else ``CHAIN``. LLM
  fields are recorded under the GenAI names; the OpenInference ones (``llm.model_name``,
  ``llm.token_count.*``, ``input.mime_type``) are derived here.

OpenTelemetry keeps at most ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` (128) attributes per span
and evicts the *oldest* beyond that, so the convention keys would go first. The functions
here put the fixed keys first and cut params, tags and metrics to a budget instead,
reporting how many they left out in ``rlobs.attributes_dropped``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rlobs import RunEnd, RunStart, Span, Step

AttrValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] \
    | Sequence[float]
Attrs = dict[str, AttrValue]

KIND = "openinference.span.kind"
OPERATION = "gen_ai.operation.name"
TOOL_NAME = "gen_ai.tool.name"
TOOL_PREFIX = "tool."
END_RESERVE = 16
"""Attribute slots a run span keeps free for what its end adds."""

_SCALARS = (str, bool, int, float)


def coerce(value: Any, max_len: int) -> AttrValue | None:
    """An OpenTelemetry-valid attribute value: scalars and homogeneous lists pass, the rest
    becomes its ``str()`` (cut to ``max_len``); ``None`` is left out."""
    if value is None:
        return None
    if isinstance(value, _SCALARS):
        return value[:max_len] if isinstance(value, str) else value
    if isinstance(value, list | tuple) and value:
        first = type(value[0])
        if first in _SCALARS and all(type(v) is first for v in value):
            return list(value)
    return str(value)[:max_len]


def add_budgeted(out: Attrs, items: Iterable[tuple[str, Any]], budget: int,
                 max_len: int) -> int:
    """Add ``items`` to ``out`` until ``out`` holds ``budget`` keys; returns how many were
    left out."""
    left_out = 0
    for key, value in items:
        clean = coerce(value, max_len)
        if clean is None:
            continue
        if key not in out and len(out) >= budget:
            left_out += 1
            continue
        out[key] = clean
    return left_out


def _prefixed(prefix: str, mapping: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    return ((f"{prefix}{key}", value) for key, value in mapping.items())


def _finite(value: float) -> float | str:
    # NaN/inf are valid doubles in OTLP but many JSON back ends reject them.
    return value if math.isfinite(value) else str(value)


_FAMILY = re.compile(r"[-/:]")


def family(run_name: str) -> str:
    """A run's family, its name up to the first ``-``, ``/`` or ``:``
    (``"cartpole-sac-seed3"`` → ``"cartpole"``): a label that does not grow with runs."""
    return _FAMILY.split(run_name, maxsplit=1)[0] or run_name


def run_name(start: RunStart) -> str:
    """The run span's name, ``invoke_agent <run name>`` (GenAI convention)."""
    return f"invoke_agent {start.name}"


def run_attributes(start: RunStart, limit: int, max_len: int) -> tuple[Attrs, int]:
    """Attributes of a run span at its start, and how many params/tags were left out."""
    attrs: Attrs = {
        OPERATION: "invoke_agent",
        "gen_ai.agent.name": start.name,
        "gen_ai.agent.id": start.run_id,
        KIND: "AGENT",
        "rlobs.run_id": start.run_id,
    }
    if start.parent_id:
        attrs["rlobs.parent_run_id"] = start.parent_id
    if start.params:
        attrs["input.value"] = _json(start.params, max_len)
        attrs["input.mime_type"] = "application/json"
    budget = max(len(attrs), limit - END_RESERVE)
    dropped = add_budgeted(attrs, _prefixed("rlobs.param.", start.params), budget, max_len)
    dropped += add_budgeted(attrs, _prefixed("rlobs.tag.", start.tags), budget, max_len)
    return attrs, dropped


def update_attributes(params: Mapping[str, Any], tags: Mapping[str, str],
                      metrics: Mapping[str, float]) -> list[tuple[str, Any]]:
    """Keys a run update adds to its run span (before budgeting)."""
    return [*_prefixed("rlobs.param.", params), *_prefixed("rlobs.tag.", tags),
            *((f"rlobs.summary.{k}", _finite(v)) for k, v in metrics.items())]


def end_attributes(end: RunEnd, skipped_steps: int, skipped_spans: int,
                   attributes_dropped: int) -> Attrs:
    """Attributes a run span gets at its end (at most :data:`END_RESERVE` of them)."""
    attrs: Attrs = {
        "rlobs.status": end.status.value,
        "rlobs.steps": end.steps,
        "rlobs.total_reward": _finite(end.total_reward),
        "rlobs.episodes": end.episodes,
        "rlobs.duration_s": end.duration_s,
        "rlobs.rejected": end.rejected,
        "rlobs.dropped": sum(end.dropped.values()),
        "rlobs.steps_skipped": skipped_steps,
        "rlobs.spans_skipped": skipped_spans,
        "rlobs.attributes_dropped": attributes_dropped,
        "output.value": json.dumps({"status": end.status.value, "steps": end.steps,
                                    "total_reward": _finite(end.total_reward),
                                    "episodes": end.episodes}),
        "output.mime_type": "application/json",
    }
    if end.error:
        attrs["rlobs.error"] = end.error
    return attrs


def step_name(step: Step) -> str:
    """A step span's name."""
    return f"step {step.step}"


def step_attributes(step: Step, limit: int, max_len: int) -> Attrs:
    """Attributes of a step span; metrics go under ``rlobs.metric.`` within ``limit``."""
    attrs: Attrs = {
        KIND: "CHAIN",
        "rlobs.step": step.step,
        "rlobs.reward": _finite(step.reward),
        "rlobs.cumulative_reward": _finite(step.cumulative_reward),
        "rlobs.episode": step.episode,
        "rlobs.done": step.done,
        "rlobs.truncated": step.truncated,
    }
    if step.episode_return is not None:
        attrs["rlobs.episode_return"] = _finite(step.episode_return)
    if step.episode_length is not None:
        attrs["rlobs.episode_length"] = step.episode_length
    metrics = ((f"rlobs.metric.{k}", _finite(v)) for k, v in step.metrics.items())
    dropped = add_budgeted(attrs, metrics, limit - 1, max_len)
    if dropped:
        attrs["rlobs.attributes_dropped"] = dropped
    return attrs


_KIND = "rlobs.kind"
_OPERATIONS = {"llm": "chat", "tool": "execute_tool", "agent": "invoke_agent",
               "embedding": "embeddings"}
"""GenAI ``gen_ai.operation.name`` of each span kind that has one."""
_TOKENS = (("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
           ("gen_ai.usage.output_tokens", "llm.token_count.completion"))


def kind_of(span: Span) -> str:
    """A span's kind: the one it was given, ``tool`` for a tool call (see the module
    docstring), ``llm`` when it carries token usage or a model, else ``chain``."""
    kind = span.attributes.get(_KIND)
    if isinstance(kind, str) and kind:
        return kind
    if _tool_hint(span) is not None:
        return "tool"
    if any(key in span.attributes for key in ("gen_ai.request.model", *dict(_TOKENS))):
        return "llm"
    return "chain"


def _tool_hint(span: Span) -> str | None:
    for key in ("tool", TOOL_NAME):
        value = span.attributes.get(key)
        if value:
            return str(value)
    if span.name.startswith(TOOL_PREFIX) and len(span.name) > len(TOOL_PREFIX):
        return span.name[len(TOOL_PREFIX):]
    return None


def tool_of(span: Span) -> str | None:
    """The tool a span calls, if it is a tool call (see module docstring)."""
    hint = _tool_hint(span)
    if hint is None and span.attributes.get(_KIND) == "tool":
        return span.name
    return hint if kind_of(span) == "tool" else None


def span_name(span: Span) -> str:
    """A span's name: its own, or ``execute_tool <tool>`` for a tool call."""
    tool = tool_of(span)
    return span.name if tool is None else f"execute_tool {tool}"


def span_attributes(span: Span, limit: int, max_len: int) -> Attrs:
    """Attributes of a span event: its kind in both conventions, LLM fields under both
    names (GenAI as recorded, OpenInference's derived), then the user's (within
    ``limit``)."""
    kind = kind_of(span)
    attrs: Attrs = {KIND: kind.upper(), "rlobs.step": span.step}
    operation = _OPERATIONS.get(kind)
    if operation:
        attrs[OPERATION] = operation
    tool = tool_of(span)
    if tool:
        attrs[TOOL_NAME] = tool
    given = span.attributes
    model = given.get("gen_ai.request.model")
    if model is not None:
        attrs["llm.model_name"] = str(model)[:max_len]
    total: float = 0
    for semconv, openinference in _TOKENS:
        value = given.get(semconv)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[openinference] = value
            total += value
    if "llm.token_count.prompt" in attrs or "llm.token_count.completion" in attrs:
        attrs["llm.token_count.total"] = total
    for key in ("input.value", "output.value"):
        if isinstance(given.get(key), str):
            text = given[key]
            attrs[key.replace(".value", ".mime_type")] = (
                "application/json" if text[:1] in "[{" else "text/plain")
    user = ((k, v) for k, v in given.items() if k not in ("tool", _KIND))
    dropped = add_budgeted(attrs, user, limit - 1, max_len)
    if dropped:
        attrs["rlobs.attributes_dropped"] = dropped
    return attrs


def error_event(error: str) -> Attrs:
    """An OpenTelemetry ``exception`` event's attributes from ``"Type: message"``."""
    kind, sep, message = error.partition(": ")
    if not sep or " " in kind:
        return {"exception.type": "Error", "exception.message": error}
    return {"exception.type": kind, "exception.message": message}


def _json(mapping: Mapping[str, Any], max_len: int) -> str:
    return json.dumps(dict(mapping), default=str, sort_keys=True)[:max_len]
