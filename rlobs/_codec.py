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


def _json_float(value: float | None) -> str:
    if value is None:
        return "null"
    if value - value != 0:  # NaN or infinity: not JSON
        raise ValueError("non-finite")
    return repr(float(value))


def _step_line(e: Step) -> str:
    """A step's line built directly: the JSON encoder's dict walk costs ~3x more."""
    return (
        f'{{"v":{SCHEMA_VERSION},"type":"step","run_id":{_dumps(e.run_id)},"step":{e.step},'
        f'"reward":{_json_float(e.reward)},'
        f'"cumulative_reward":{_json_float(e.cumulative_reward)},'
        f'"metrics":{_dumps(e.metrics)},"done":{"true" if e.done else "false"},'
        f'"truncated":{"true" if e.truncated else "false"},"episode":{e.episode},'
        f'"episode_return":{_json_float(e.episode_return)},'
        f'"episode_length":{"null" if e.episode_length is None else e.episode_length},'
        f'"time_ns":{e.time_ns}}}\n'
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
