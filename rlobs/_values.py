"""What a value the user passes becomes: a number, a JSON-safe value, or a rejection.

Two functions every hook shares, so one table (docs/core.md, "What each input becomes")
describes them all:

- :func:`as_number`: a metric or reward value as a float (or an int that a float can
  hold), or ``None`` when it is not a number.
- :func:`jsonable`: any value as something JSON can hold, never raising: non-finite
  floats become ``"NaN"``/``"Infinity"``/``"-Infinity"``, keys become strings, cycles and
  nesting deeper than :data:`MAX_DEPTH` become a marker string, numpy and torch scalars
  their Python value (``np.int64(3)`` → ``3``, ``np.bool_(True)`` → ``True``), other
  objects their ``str()`` (cut to :data:`MAX_TEXT`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
"""Nesting kept in params, tags and span attributes; deeper levels become a marker."""
MAX_TEXT = 8192
"""Longest ``str()`` of an object that is not JSON (longer texts are cut)."""
_FLOAT_MAX = float.fromhex("0x1.fffffffffffffp+1023")


def as_number(value: Any) -> float | int | None:
    """``value`` as a number, or ``None`` if it is not one.

    Floats and ints a float can hold pass unchanged; bools, numpy scalars, 0-d arrays and
    tensors, ``Decimal`` and ``Fraction`` go through ``float()``; strings, ``None``,
    containers, ints too large for a float and anything whose ``float()`` fails are not
    numbers.
    """
    kind = value.__class__
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return value if -_FLOAT_MAX <= value <= _FLOAT_MAX else None
    if value is None or isinstance(value, str | bytes | Mapping | list | tuple | set):
        return None
    try:
        return float(value)
    except Exception:  # __float__ of a foreign type may raise anything (meta tensors)
        return None


def _non_finite(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _text(value: Any) -> str:
    try:
        text = str(value)
    except Exception as exc:  # a __str__ that raises
        text = f"<{type(value).__name__}: str() failed: {type(exc).__name__}>"
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 14] + "...[truncated]"


def jsonable(value: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """``value`` as JSON-safe data (see the module docstring); never raises."""
    if value is None or value is True or value is False:
        return value
    kind = value.__class__
    if kind is str:
        return value
    if kind is int:
        return value if -_FLOAT_MAX <= value <= _FLOAT_MAX else _text(value)
    if kind is float:
        return _non_finite(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if id(value) in _seen:
            return "<cycle>"
        if _depth >= MAX_DEPTH:
            return "<nested too deep>"
        seen = _seen | {id(value)}
        if isinstance(value, Mapping):
            return {(k if k.__class__ is str else _text(k)): jsonable(v, _depth + 1, seen)
                    for k, v in list(value.items())}
        return [jsonable(v, _depth + 1, seen) for v in list(value)]
    if isinstance(value, str):  # a str subclass (an enum member)
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return jsonable(int(value), _depth, _seen)
    if isinstance(value, float):
        return _non_finite(float(value))
    if getattr(value, "ndim", None) == 0:  # a numpy or torch scalar: its Python value
        try:
            item = value.item()
        except Exception:  # a meta tensor, or an exotic scalar
            item = None
        if item.__class__ in (bool, int, float, str):
            return jsonable(item, _depth, _seen)
        number = as_number(value)
        return _text(value) if number is None else _non_finite(float(number))
    if hasattr(value, "tolist") and getattr(value, "size", None) is not None:
        try:
            small = int(value.size if not callable(value.size) else value.numel()) <= 1024
            if small:
                return jsonable(value.tolist(), _depth, _seen)
        except Exception:  # a meta tensor, or an exotic array
            pass
    return _text(value)
