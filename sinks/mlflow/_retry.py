"""Which MLflow failures are worth retrying, and the backoff between tries."""

from __future__ import annotations

import random
import time

_TRANSIENT_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
})
_TRANSIENT_HTTP = frozenset({429, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says "try again later": unreachable server, 429/5xx, locked store.

    A connection failure surfaces from MLflow as ``MlflowException("API request to … failed
    with exception …")`` (code INTERNAL_ERROR); a 500 with a proper error body does not
    count (it would fail again), except when the backend store says it is locked or gone.
    """
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    code = getattr(exc, "error_code", None)
    if code in _TRANSIENT_CODES:
        return True
    status = getattr(exc, "get_http_status_code", None)
    if callable(status) and status() in _TRANSIENT_HTTP:
        return True
    text = str(exc)
    if "API request to" in text and ("failed with exception" in text or "timeout" in text):
        return True
    if "failed with error code 5" in text or "database is locked" in text:
        return True
    name = type(exc).__name__
    return name in ("ConnectionError", "OperationalError", "Timeout", "ReadTimeout")


class Backoff:
    """Exponential backoff with jitter: 0.25 s doubling to ``cap_s``; reset on success."""

    def __init__(self, first_s: float = 0.25, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0
        self.retry_at = 0.0
        self.down_since: float | None = None
        self.last_error: str | None = None

    def failed(self, exc: BaseException) -> float:
        """Record a transient failure; returns the delay before the next try."""
        self.failures += 1
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        delay = min(self.cap_s, self.first_s * 2.0 ** min(self.failures - 1, 16))
        delay *= random.uniform(0.8, 1.2)
        self.retry_at = now + delay
        self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return delay

    def succeeded(self) -> None:
        """Reset after a successful request."""
        self.failures = 0
        self.retry_at = 0.0
        self.down_since = None

    def wait_s(self) -> float:
        """Seconds until the next try is allowed (0 when it is now)."""
        return max(0.0, self.retry_at - time.monotonic())
