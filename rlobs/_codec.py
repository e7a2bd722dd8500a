"""Events to JSON lines and back: the JSONL schema, encoded and decoded by msgspec (C).

A line is ``{"type": "<type>", <event fields>, "v": 1}``. JSON has no NaN or infinity,
so non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (a documented coercion) and read back as floats. A step or span line
leaves out fields at their default (``done``/``truncated`` false, ``episode`` 0,
``episode_return`` and ``parent_span_id`` null): readers fill them back in, and ignore
fields they do not know, so later schema versions stay readable.

The hot path records each step as a :class:`StepLine` (a msgspec struct the garbage
collector never tracks: a tuple per step cost the loop ~0.4 µs of collections), and the
writer turns a chunk of them into lines with one msgspec call (:func:`encode_chunk`).
Anything unusual — NaN, a value msgspec cannot encode, a key that is not a string —
sends just that chunk down the careful path, line by line, where values are coerced or
rejected (and counted) as docs/core.md documents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._events import EVENT_TYPES, SCHEMA_VERSION, TYPE_NAMES, Event, RunStatus, Span, Step
from ._values import as_number, jsonable

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_FIELDS = ("reward", "cumulative_reward", "episode_return", "total_reward")
_FIELDS = {cls: cls._fields for cls in TYPE_NAMES}
_FLOAT_MAX = float.fromhex("0x1.fffffffffffffp+1023")
_OMITTED: dict[type, dict[str, Any]] = {
    Step: {"done": False, "truncated": False, "episode": 0, "env_steps": 1}}
"""Fields a line leaves out at these values (others left out are ``None``)."""


class StepLine(msgspec.Struct, tag_field="type", tag="step", omit_defaults=True, gc=False):
    """A step as ``Run.step`` records it: the fields of :class:`Step`, then ``v``."""

    run_id: str
    step: int
    reward: float
    cumulative_reward: float
    metrics: dict[str, float]
    done: bool = False
    truncated: bool = False
    episode: int = 0
    episode_return: float | None = None
    episode_length: int | None = None
    time_ns: int = 0
    env_steps: int = 1
    v: int = 0


class SpanLine(msgspec.Struct, tag_field="type", tag="span", omit_defaults=True, gc=False):
    """A span as a run records it: the fields of :class:`Span`, then ``v``."""

    run_id: str
    name: str
    step: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    span_id: int
    parent_span_id: int | None = None
    error: str | None = None
    v: int = 0


def _number_hook(value: Any) -> Any:
    """msgspec's fallback for objects it does not know: numbers (numpy, 0-d tensors)."""
    number = as_number(value)
    if number is None:
        raise TypeError(f"not encodable: {type(value).__name__}")
    return number


_encoder = msgspec.json.Encoder(enc_hook=_number_hook)
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines
_decoder = msgspec.json.Decoder()
_typed = msgspec.json.Decoder(StepLine | SpanLine)


def to_dict(event: Event) -> dict[str, Any]:
    """The JSON object of an event (before values are made JSON-safe)."""
    cls = type(event)
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "type": TYPE_NAMES[cls]}
    out.update(zip(_FIELDS[cls], event, strict=True))
    return out


def to_text(event: Event) -> str:
    """One JSONL line (with its newline) for ``event``, as text."""
    return to_line(event).decode()


def to_line(event: Event) -> bytes:
    """One JSONL line (with its newline) for ``event``; never raises for odd values."""
    obj = to_dict(event)
    try:
        text = _encode(obj)
    except (TypeError, ValueError, OverflowError, RecursionError):
        text = b""
    if not text or b"null" in text:  # a NaN/infinity, or a value that needs coercing
        text = _encode(jsonable(obj))
    return text + b"\n"


# ---------------------------------------------------------------------- the hot path

Rejector = Callable[[str, Any], None]
"""``reject(key, value)``: count a value left out."""


def clean_metrics(metrics: Mapping[Any, Any], reject: Rejector) -> dict[str, float | int]:
    """Metric values as numbers with string keys; ``reject(key, value)`` for the rest."""
    clean: dict[str, float | int] = {}
    for key, value in metrics.items():
        kind = value.__class__
        if kind is float or (kind is int and -_FLOAT_MAX <= value <= _FLOAT_MAX):
            clean[key if key.__class__ is str else str(key)] = value
            continue
        number = as_number(value)
        if number is None:
            reject(str(key), value)
        else:
            clean[key if key.__class__ is str else str(key)] = number
    return clean


def encode_chunk(chunk: list[Any], reject: Rejector, careful: bool = True) -> bytes:
    """The JSONL lines of a chunk of :class:`StepLine` and :class:`SpanLine`, in order.

    One msgspec call for the common chunk. ``careful`` (the run saw a NaN or recorded a
    span) makes it look for the ``null`` msgspec writes for NaN and infinity; a line with
    one — or a chunk msgspec cannot encode at all — goes line by line, where values are
    made JSON-safe and what is not a number is rejected.
    """
    try:
        data = _encode_lines(chunk)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return b"".join([_line(item, reject) for item in chunk])
    if careful and b"null" in data:
        return b"".join([_line(item, reject) for item in chunk])
    return data


def _line(item: Any, reject: Rejector) -> bytes:
    try:
        data = _encode(item)
    except (TypeError, ValueError, OverflowError, RecursionError):
        data = b"null"
    if b"null" in data:
        return to_line(as_event(item, reject))
    return data + b"\n"


def as_event(item: StepLine | SpanLine, reject: Rejector | None = None) -> Step | Span:
    """The :class:`Step` or :class:`Span` of a recorded line (metrics cleaned when a
    ``reject`` is given)."""
    fields = msgspec.structs.astuple(item)[:-1]
    if item.__class__ is StepLine:
        if reject is not None:
            fields = (*fields[:4], clean_metrics(fields[4], reject), *fields[5:])
        return tuple.__new__(Step, fields)
    return tuple.__new__(Span, fields)


# ---------------------------------------------------------------------- reading

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
    omitted = _OMITTED.get(cls, {})
    values = {}
    for name in cls._fields:
        if name in obj:
            values[name] = obj[name]
        elif name not in defaults:
            values[name] = omitted.get(name)
    for name in _FLOAT_FIELDS:
        if name in values:
            values[name] = _float(values[name])
    if isinstance(values.get("metrics"), dict):
        values["metrics"] = {k: _float(v) for k, v in values["metrics"].items()}
    if "status" in values:
        values["status"] = RunStatus(values["status"])
    for name in ("params", "tags", "metrics", "attributes", "dropped"):
        if name in values and values[name] is None:
            values[name] = {}
    return cls(**values)


def from_line(line: str | bytes) -> Event:
    """Parse one JSONL line.

    Raises:
        ValueError: the line is not valid JSON or not an rlobs event.
    """
    try:
        obj = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return from_dict(obj)


def _typed_event(row: StepLine | SpanLine) -> Event:
    return as_event(row)


def decode_line(line: bytes) -> Event:
    """Parse one complete line, steps and spans by the fast typed decoder.

    Raises:
        ValueError: the line is not an rlobs event.
    """
    if line.startswith(b'{"type":"step"') or line.startswith(b'{"type":"span"'):
        try:
            return _typed_event(_typed.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return from_line(line)
