"""LLM and tool calls as first-class spans: kinds, token usage, cost, captured input/output.

A span's kind (``run.span(..., kind="llm")``, ``@traced(kind="tool")``) and its LLM
fields are recorded as plain attributes in the run's log, under the OpenTelemetry GenAI
names (:data:`MODEL`, :data:`INPUT_TOKENS`, :data:`OUTPUT_TOKENS`,
:data:`FINISH_REASONS`) and the OpenInference ones for text (``input.value``,
``output.value``); the ``otel`` sink derives both conventions from them. Token counts and
cost are also summed per step (metrics ``llm.input_tokens``, ``llm.output_tokens``,
``llm.cost_usd``, ``llm.calls`` of the step the call ends in) and per run (summary metrics
``llm.*_total``), so every sink gets them.

Cost comes from a price table the user gives (:func:`set_llm_prices` or
:data:`~rlobs.environment_variables.RLOBS_LLM_PRICES`): US dollars per million input and
output tokens, by model name. Captured text is opt-in, redacted
(:func:`rlobs._params.redact_text`) and cut to ``RLOBS_CAPTURE_MAX_CHARS``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ._log import logger
from ._params import redact_text
from ._values import jsonable

KINDS = ("llm", "tool", "agent", "chain", "retriever", "embedding")
"""The span kinds viewers of LLM agents know (OpenInference's, lower case)."""
KIND = "rlobs.kind"
MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
COST = "rlobs.cost_usd"
INPUT = "input.value"
OUTPUT = "output.value"
_DEFAULT_MAX_CHARS = 4096

_prices: dict[str, tuple[float, float]] | None = None


def check_kind(kind: str | None) -> str | None:
    """``kind`` if it is one of :data:`KINDS` (or ``None``).

    Raises:
        ValueError: any other value.
    """
    if kind is None or kind in KINDS:
        return kind
    raise ValueError(f"span kind {kind!r} is not one of {', '.join(KINDS)}")


def set_llm_prices(prices: Mapping[str, Sequence[float]] | None) -> None:
    """Set the price table LLM costs are computed from (``None``: back to
    ``RLOBS_LLM_PRICES``).

    Args:
        prices: model name → ``(USD per 1M input tokens, USD per 1M output tokens)``.

    Raises:
        ValueError: a price that is not a pair of non-negative numbers.
    """
    global _prices
    _prices = None if prices is None else _table(prices)


def _table(prices: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    table = {}
    for model, pair in prices.items():
        try:
            given, taken = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"price of {model!r} must be (input, output) USD per 1M "
                             f"tokens, not {pair!r}") from None
        if not (given >= 0 and taken >= 0 and math.isfinite(given + taken)):
            raise ValueError(f"price of {model!r} must be non-negative, not {pair!r}")
        table[str(model)] = (given, taken)
    return table


def prices() -> dict[str, tuple[float, float]]:
    """The price table in use: :func:`set_llm_prices`'s, else ``RLOBS_LLM_PRICES``'s
    (JSON ``{"model": [in, out]}``; a bad value is logged and ignored)."""
    if _prices is not None:
        return _prices
    raw = os.environ.get("RLOBS_LLM_PRICES", "").strip()
    if not raw:
        return {}
    try:
        return _table(json.loads(raw))
    except (ValueError, AttributeError) as exc:
        logger.warning("RLOBS_LLM_PRICES ignored", error=str(exc)[:200])
        return {}


def cost_of(model: str | None, input_tokens: float, output_tokens: float) -> float | None:
    """The cost of a call in USD from the price table, ``None`` for an unpriced model."""
    price = prices().get(model or "")
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


def capture(value: Any) -> str:
    """``value`` as text for ``input.value``/``output.value``: strings as they are, the rest
    as JSON, redacted and cut to ``RLOBS_CAPTURE_MAX_CHARS`` (default 4096)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(jsonable(value), default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
    try:
        limit = max(16, int(os.environ.get("RLOBS_CAPTURE_MAX_CHARS", _DEFAULT_MAX_CHARS)))
    except ValueError:
        limit = _DEFAULT_MAX_CHARS
    text = redact_text(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def usage_of(result: Any) -> dict[str, Any]:
    """Token usage and finish reasons of an LLM client's response, read by duck typing
    (OpenAI-style ``usage.prompt_tokens``/``completion_tokens``, Anthropic-style
    ``usage.input_tokens``/``output_tokens``, ``choices[].finish_reason``,
    ``stop_reason``, ``model``); a mapping with those keys works too."""
    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    out: dict[str, Any] = {}
    usage = get(result, "usage")
    if usage is not None:
        given = get(usage, "input_tokens") or get(usage, "prompt_tokens")
        taken = get(usage, "output_tokens") or get(usage, "completion_tokens")
        if isinstance(given, int | float):
            out["input_tokens"] = given
        if isinstance(taken, int | float):
            out["output_tokens"] = taken
    reasons = [get(c, "finish_reason") for c in (get(result, "choices") or [])
               if isinstance(c, Mapping) or hasattr(c, "finish_reason")]
    stop = get(result, "stop_reason")
    reasons = [str(r) for r in [*reasons, stop] if r]
    if reasons:
        out["finish_reasons"] = reasons
    model = get(result, "model")
    if isinstance(model, str):
        out["model"] = model
    return out


def _count(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def llm_attributes(model: str | None, input_tokens: Any, output_tokens: Any,
                   finish_reasons: Any, cost_usd: Any,
                   ) -> tuple[dict[str, Any], tuple[str | None, float, float, float | None]]:
    """A call's span attributes, and ``(model, input, output, cost)`` to count."""
    attrs: dict[str, Any] = {}
    given, taken = _count(input_tokens), _count(output_tokens)
    if model is not None:
        attrs[MODEL] = str(model)
    if given is not None:
        attrs[INPUT_TOKENS] = given
    if taken is not None:
        attrs[OUTPUT_TOKENS] = taken
    if finish_reasons is not None:
        reasons = [finish_reasons] if isinstance(finish_reasons, str) else finish_reasons
        attrs[FINISH_REASONS] = [str(r) for r in reasons]
    cost = _count(cost_usd)
    if cost is None and (given or taken):
        cost = cost_of(attrs.get(MODEL), given or 0, taken or 0)
    if cost is not None:
        attrs[COST] = cost
    return attrs, (attrs.get(MODEL), given or 0, taken or 0, cost)
