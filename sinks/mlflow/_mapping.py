"""rlobs params, tags and metrics as MLflow accepts them.

MLflow rejects a whole batch for one bad key, caps value lengths and clamps ±Inf to
±1.8e308; nothing here raises. Keys are sanitised to MLflow's characters (the original
kept in a tag), over-long values truncated with a marker, and non-finite metric values
kept out of MLflow but counted (see :class:`NonFinite`). Limits are MLflow 3's
(``mlflow.utils.validation``), copied so this module needs no mlflow import.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_BATCH_BYTES = 900_000  # MLflow refuses requests over 1 MB; keep a margin for JSON framing
TRUNCATED = "...[truncated]"
KEY_TAG = "rlobs.key."
"""Prefix of the tags that keep an original key changed by sanitising."""

_BAD_CHARS = re.compile(r"[^/\w.\- :]")


def path_segment(name: str) -> str:
    """A file-name-safe form of an experiment name, for its artifact folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    if slug != name:
        slug = f"{slug[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def sanitize_key(key: str) -> str:
    """``key`` as MLflow accepts it: only its characters (``_`` for others), at most 250
    of them, and no path tricks — no empty, ``.`` or ``..`` segment, no leading ``/`` or
    ``..`` (MLflow refuses a whole batch for one such key)."""
    clean = _BAD_CHARS.sub("_", key)[:MAX_KEY]
    parts = [p for p in clean.split("/") if p]
    parts = ["_" * len(p) if set(p) == {"."} else p for p in parts]
    clean = "/".join(parts) or "_"
    if clean.startswith(".."):
        clean = "_" + clean[1:]
    if _refused(clean):  # cannot happen; never send a key MLflow refuses
        clean = "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return clean[:MAX_KEY]


def _refused(key: str) -> bool:
    """MLflow's own rule (``mlflow.utils.validation.path_not_unique``)."""
    norm = posixpath.normpath(key)
    return norm != key or norm == "." or norm.startswith("..") or norm.startswith("/")


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending with a marker when cut."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATED)] + TRUNCATED


def param_value(value: Any) -> str:
    """A param value as text: lists/objects JSON-encoded, truncated to MLflow's limit."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return truncate(text, MAX_PARAM_VALUE)


def map_params(params: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """MLflow params and the tags that keep renamed keys.

    Returns:
        ``(params, tags)``; ``tags`` maps ``rlobs.key.<new>`` to each changed original key.
    """
    out: dict[str, str] = {}
    tags: dict[str, str] = {}
    for key, value in params.items():
        name = sanitize_key(str(key))
        if name != key:
            tags[sanitize_key(KEY_TAG + name)] = truncate(str(key), MAX_TAG_VALUE)
        out[name] = param_value(value)
    return out, tags


def map_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow tags: sanitised keys (originals kept), values truncated."""
    out: dict[str, str] = {}
    for key, value in tags.items():
        name = sanitize_key(str(key))
        if name != key:
            out[sanitize_key(KEY_TAG + name)] = truncate(str(key), MAX_TAG_VALUE)
        out[name] = truncate(str(value), MAX_TAG_VALUE)
    return out


class NonFinite:
    """Counts non-finite metric values per key; they are never sent as metrics.

    Why: MLflow stores ±Inf clamped to ±1.8e308 (a silent lie) and NaN breaks plots and
    comparisons. The JSONL log keeps the exact values; MLflow gets, per key, a tag
    ``rlobs.nonfinite.<key>`` = ``"nan=N posinf=P neginf=M first_step=S"`` and at run end
    the metric ``rlobs.nonfinite_values`` (the total).
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.total = 0
        self._changed: set[str] = set()

    def add(self, key: str, value: float, step: int) -> None:
        """Count one non-finite ``value`` of metric ``key`` at ``step``."""
        slot = 0 if math.isnan(value) else (1 if value > 0 else 2)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0, 0, 0, step]
        counts[slot] += 1
        self.total += 1
        self._changed.add(key)

    def take_tags(self) -> dict[str, str]:
        """Tags for the keys whose counts changed since the last call."""
        tags = {}
        for key in self._changed:
            nan, pos, neg, first = self.counts[key]
            tags[sanitize_key(f"rlobs.nonfinite.{key}")] = (
                f"nan={nan} posinf={pos} neginf={neg} first_step={first}")
        self._changed.clear()
        return tags


def payload_size(key: str, value: str) -> int:
    """Rough JSON size of one key/value entry of a batch."""
    return len(key) + len(value) + 32


def chunk_items(items: Mapping[str, str], limit: int = MAX_PARAMS_TAGS_PER_BATCH
                ) -> Iterator[list[tuple[str, str]]]:
    """Key/value pairs in batches of at most ``limit`` entries and ``MAX_BATCH_BYTES``."""
    chunk: list[tuple[str, str]] = []
    size = 0
    for key, value in items.items():
        entry = payload_size(key, value)
        if chunk and (len(chunk) >= limit or size + entry > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((key, value))
        size += entry
    if chunk:
        yield chunk
