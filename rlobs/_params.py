"""Params and tags as sinks receive them: flattened, JSON-safe, secrets redacted.

This is the one place secrets are removed: values whose key looks like a credential and
the password part of URIs (``scheme://user:password@host``) never reach a sink.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

# Key segments that name a credential; "max_tokens" or "tokenizer" do not match.
_SECRET_KEY = re.compile(
    r"(?:^|[^a-z])(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?"
    r"|private[_-]?key|access[_-]?key|auth|authorization|cookie|signature)(?:$|[^a-z])"
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_URI_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@")


def is_secret_key(key: str) -> bool:
    """Whether a param/tag key looks like it holds a credential."""
    return _SECRET_KEY.search(_CAMEL.sub(r"\1_\2", key).lower()) is not None


def redact_uri(text: str) -> str:
    """Replace the password in every ``scheme://user:password@`` of ``text``."""
    return _URI_PASSWORD.sub(rf"\1:{REDACTED}@", text)


_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|auth|authorization)\s*[=:]\s*)([^\s,;&'\"]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact_text(text: str) -> str:
    """Free text (an error message, a status detail) with credentials replaced: URI
    passwords, ``password=…``-style assignments, ``Bearer …`` tokens."""
    text = redact_uri(text)
    text = _SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def _leaf(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, list | tuple):
        try:
            return json.loads(redact_uri(json.dumps(list(value))))
        except (TypeError, ValueError):
            return redact_uri(str(value))
    return redact_uri(str(value))


def flatten_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys, keep JSON-safe leaves, redact secrets.

    Leaves that are not ``None``/bool/int/float/str/list are stored as ``str(value)``
    (a documented coercion), lists that are not JSON-serialisable likewise.
    """
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif is_secret_key(str(key)):
            out[name] = REDACTED
        else:
            out[name] = _leaf(value)
    return out


def clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as ``str -> str`` with secrets redacted."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        name = str(key)
        out[name] = REDACTED if is_secret_key(name) else redact_uri(str(value))
    return out
