"""Params, tags and free text as sinks receive them: flattened, JSON-safe, secrets redacted.

This is the one place secrets are removed, for everything rlobs records or shows:
params and tags (by key, nested keys by their full dotted name), span attributes, the
command line in the provenance tags (values of secret-named flags), error texts, status
details and log lines (URI passwords, ``password=…``-style assignments, bearer tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._values import MAX_DEPTH, jsonable

REDACTED = "***"

# Names of credentials, matched as whole segments of a key split at non-letters (and at
# camelCase humps), so "max_tokens", "tokenizer", "author" and "passes" do not match; the
# short "pass" and "pat" only as a key's last segment ("db_pass", "github_pat"), so
# "pass@1" or "pass_rate" stay readable.
_SECRET_WORDS = (
    "password|passwd|passphrase|pwd|pgpassword|pgpass|secret|token|apikey|api_key|api-key"
    "|credentials?|private_key|private-key|privatekey|access_key|access-key|accesskey"
    "|auth|authorization|cookie|signature|bearer|jwt|session_?id|sessionid|client_secret"
)
_SECRET_KEY = re.compile(rf"(?:^|[^a-z])(?:(?:{_SECRET_WORDS})(?:$|[^a-z])|(?:pass|pat)$)")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_URI_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@")
_SECRET_ASSIGNMENT = re.compile(
    rf"(?i)\b((?:[a-z0-9_]*[_-])?(?:{_SECRET_WORDS})\s*[=:]\s*)([^\s,;&'\"]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")
_FLAG = re.compile(r"^--?([A-Za-z0-9_.-]+)(=.*)?$")
_known: dict[str, bool] = {}


def is_secret_key(key: str) -> bool:
    """Whether a param/tag/attribute key (or a dotted path of keys) names a credential."""
    known = _known.get(key)
    if known is None:
        known = _SECRET_KEY.search(_CAMEL.sub(r"\1_\2", key).lower()) is not None
        if len(_known) < 65536:
            _known[key] = known
    return known


def redact_uri(text: str) -> str:
    """Replace the password in every ``scheme://user:password@`` of ``text``."""
    return _URI_PASSWORD.sub(rf"\1:{REDACTED}@", text)


def redact_text(text: str) -> str:
    """Free text (an error message, a status detail) with credentials replaced: URI
    passwords, ``password=…``-style assignments, ``Bearer …`` tokens."""
    text = _BEARER.sub(rf"\1 {REDACTED}", redact_uri(text))
    return _SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", text)


def redact_argv(argv: Sequence[str]) -> str:
    """A command line with the values of secret-named flags replaced
    (``--api-key X``, ``--token=X``, ``-p X`` stays: short flags say nothing)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        flag = _FLAG.match(arg)
        if flag and is_secret_key(flag.group(1)):
            if flag.group(2) is not None:
                arg = f"{arg.split('=', 1)[0]}={REDACTED}"
            else:
                hide_next = True
        out.append(redact_text(arg))
    return " ".join(out)


def _leaf(value: Any) -> Any:
    """A param's value: JSON-safe (a documented coercion), URI passwords redacted."""
    clean = jsonable(value)
    if isinstance(clean, str):
        return redact_uri(clean)
    if isinstance(clean, list | dict):
        return _redact_nested(clean)
    return clean


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, list):
        return [_redact_nested(v) for v in value]
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else _redact_nested(v) for k, v in value.items()}
    return value


def flatten_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys, keep JSON-safe leaves, redact secrets.

    Keys become strings; leaves that are not ``None``/bool/int/float/str/list become
    JSON-safe as :func:`rlobs._values.jsonable` documents (``str(value)`` for objects);
    a mapping nested deeper than 32 levels, or containing itself, ends in a marker
    string. A value whose full dotted key names a credential is ``***``.
    """
    out: dict[str, Any] = {}
    _flatten(params or {}, prefix, out, 0, frozenset())
    return out


def _flatten(params: Mapping[Any, Any], prefix: str, out: dict[str, Any], depth: int,
             seen: frozenset[int]) -> None:
    try:
        items = list(params.items())
    except Exception as exc:  # a mapping whose items() fails
        out[prefix.rstrip(".") or "params"] = f"<unreadable: {type(exc).__name__}>"
        return
    for key, value in items:
        name = f"{prefix}{key if isinstance(key, str) else jsonable(key)}"
        if is_secret_key(name):
            out[name] = REDACTED
        elif isinstance(value, Mapping):
            if id(value) in seen:
                out[name] = "<cycle>"
            elif depth + 1 >= MAX_DEPTH:
                out[name] = "<nested too deep>"
            else:
                _flatten(value, f"{name}.", out, depth + 1, seen | {id(value)})
        else:
            out[name] = _leaf(value)


def clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as ``str -> str`` with secrets redacted (values that are not strings become
    their JSON text or ``str()``)."""
    out: dict[str, str] = {}
    try:
        items = list((tags or {}).items())
    except Exception:
        return out
    for key, value in items:
        name = key if isinstance(key, str) else str(jsonable(key))
        if is_secret_key(name):
            out[name] = REDACTED
        else:
            text = value if isinstance(value, str) else str(jsonable(value))
            out[name] = redact_uri(text)
    return out


def clean_attributes(attributes: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """Span attributes with secrets redacted: values of secret-named keys, URI passwords
    in string values. The common mapping, with neither, is returned as it is."""
    for key, value in attributes.items():
        if (key.__class__ is str and is_secret_key(key)) or \
                (value.__class__ is str and "@" in value and "://" in value):
            break
    else:
        return attributes
    return {k: REDACTED if k.__class__ is str and is_secret_key(k)
            else redact_uri(v) if v.__class__ is str else v
            for k, v in attributes.items()}
