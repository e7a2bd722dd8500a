"""Is the tracking server or store reachable now? For ``rlobs status`` (``Sink.probe``)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from rlobs import redact_uri

PROBE_TIMEOUT_S = 3.0


def probe_tracking_uri(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when ``uri`` answers (a server's ``GET /health``) or can be written (a
    SQLite file or a file store); else why not. Other databases are not checked."""
    try:
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https"):
            return _health(parts.scheme, parts.hostname or "", parts.port, parts.path,
                           timeout_s)
    except ValueError as exc:  # a bad port, an unclosed IPv6 bracket
        return f"bad tracking URI {redact_uri(uri)}: {exc}"
    if parts.scheme == "sqlite":
        path = sqlite_path(uri)
        return _writable(path.parent, "SQLite store") if path is not None else None
    if parts.scheme in ("file", ""):
        return _writable(Path(unquote(parts.path or uri)), "file store")
    return None


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URI; ``None``
    for any other URI (or an in-memory SQLite one)."""
    if not uri.startswith("sqlite:") or ":///" not in uri:
        return None
    raw = uri.split(":///", 1)[1].split("?", 1)[0]
    return Path(unquote(raw)) if raw else None


def _health(scheme: str, host: str, port: int | None, path: str, timeout_s: float) -> str | None:
    netloc = host if port is None else f"{host}:{port}"  # credentials are not for /health
    url = urlunsplit((scheme, netloc, path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"GET {redact_uri(url)} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach {redact_uri(url)}: {reason}"
    return None if status == 200 else f"GET {redact_uri(url)} answered HTTP {status}"


def _writable(folder: Path, what: str) -> str | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # made on first use: its nearest existing ancestor counts
    if not existing.is_dir():
        return f"{what}: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{what}: {existing} is not writable"
    return None
