"""Events to JSON lines and back: the JSONL schema.

A line is ``{"v": 1, "type": "<type>", <event fields>}``. JSON has no NaN or infinity,
so non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (a documented coercion) and read back as floats. Readers ignore fields
they do not know, so later schema versions stay readable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ._events import EVENT_TYPES, SCHEMA_VERSION, TYPE_NAMES, Event, RunStatus, Step

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str).encode
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_FIELDS = ("reward", "cumulative_reward", "episode_return", "total_reward")
_FIELDS = {cls: cls._fields for cls in TYPE_NAMES}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_dict(event: Event) -> dict[str, Any]:
    """The JSON object of an event (before non-finite floats are replaced)."""
    cls = type(event)
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "type": TYPE_NAMES[cls]}
    out.update(zip(_FIELDS[cls], event, strict=True))
    return out


_quoted: dict[str, str] = {}


def _quote(text: str) -> str:
    """JSON of a run id or metric key, cached: every step line repeats them."""
    quoted = _quoted.get(text)
    if quoted is None:
        if len(_quoted) > 4096:
            _quoted.clear()
        quoted = _quoted[text] = _dumps(text)
    return quoted


def _metrics_json(metrics: Mapping[str, float]) -> str:
    """Step metrics (str keys, int/float values: ``Run.step`` guarantees it) as JSON."""
    parts = []
    for key, value in metrics.items():
        if value - value != 0:  # NaN or infinity
            raise ValueError("non-finite")
        parts.append(f"{_quote(key)}:{value!r}")
    return "{" + ",".join(parts) + "}"


def _step_line(e: Step) -> str:
    """A step's line built directly: the JSON encoder's dict walk costs ~3x more.

    Raises:
        ValueError: a value is NaN or infinite (the caller takes the general path).
    """
    reward, total, ret = e.reward, e.cumulative_reward, e.episode_return
    if not (reward - reward == 0 and total - total == 0):  # NaN or infinity
        raise ValueError("non-finite")
    if ret is None:
        ret_json = "null"
    elif ret - ret == 0:
        ret_json = repr(ret)
    else:
        raise ValueError("non-finite")
    length = e.episode_length
    return (
        f'{{"v":{SCHEMA_VERSION},"type":"step","run_id":{_quote(e.run_id)},'
        f'"step":{e.step},"reward":{reward!r},"cumulative_reward":{total!r},'
        f'"metrics":{_metrics_json(e.metrics)},"done":{"true" if e.done else "false"},'
        f'"truncated":{"true" if e.truncated else "false"},"episode":{e.episode},'
        f'"episode_return":{ret_json},'
        f'"episode_length":{"null" if length is None else length},"time_ns":{e.time_ns}}}\n'
    )


def to_line(event: Event) -> str:
    """One JSONL line (with its newline) for ``event``."""
    if type(event) is Step:
        try:
            return _step_line(event)
        except ValueError:  # a NaN or infinity: take the general path below
            pass
    obj = to_dict(event)
    try:
        text = _dumps(obj)
    except ValueError:  # a NaN or infinity somewhere
        text = _dumps(_finite(obj))
    return text + "\n"


def _float(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    return value


def from_dict(obj: Mapping[str, Any]) -> Event:
    """Rebuild an event from its JSON object.

    Raises:
        ValueError: the object is not an rlobs event.
    """
    cls = EVENT_TYPES.get(str(obj.get("type")))
    if cls is None:
        raise ValueError(f"not an rlobs event: type={obj.get('type')!r}")
    defaults = cls._field_defaults
    values = {}
    for name in cls._fields:
        if name in obj:
            values[name] = obj[name]
        elif name not in defaults:
            values[name] = None
    for name in _FLOAT_FIELDS:
        if name in values:
            values[name] = _float(values[name])
    if isinstance(values.get("metrics"), dict):
        values["metrics"] = {k: _float(v) for k, v in values["metrics"].items()}
    if "status" in values:
        values["status"] = RunStatus(values["status"])
    return cls(**values)


def from_line(line: str) -> Event:
    """Parse one JSONL line.

    Raises:
        ValueError: the line is not valid JSON or not an rlobs event.
    """
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return from_dict(obj)
