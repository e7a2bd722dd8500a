"""Does the OTLP endpoint accept connections now? For ``rlobs status`` (``Sink.probe``)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from rlobs import redact_uri

PROBE_TIMEOUT_S = 3.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def probe_endpoint(endpoint: str, protocol: str,
                   timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when a TCP connection to the endpoint's host and port opens within
    ``timeout_s``; else why not. gRPC endpoints may be given as ``host:port``."""
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 4317 if protocol == "grpc" else 4318)
    except ValueError as exc:
        return f"bad endpoint {redact_uri(endpoint)}: {exc}"
    host = parts.hostname
    if not host:
        return f"bad endpoint {redact_uri(endpoint)}: no host"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
