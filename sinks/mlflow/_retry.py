"""What an MLflow failure means, and the backoff between tries.

Three kinds (:func:`classify`):

- ``OUTAGE`` — the server cannot be reached (connection refused or reset, a timeout, a
  locked SQLite store): nothing was done; everything stays buffered and the sender probes
  at most :data:`OUTAGE_PROBE_S` apart, so a restarted server is noticed within a second.
- ``RETRY`` — the server answered 429 or 5xx: the request may succeed if sent again, a
  bounded number of times (:data:`MAX_ATTEMPTS`); then it counts as a rejection. A server
  that keeps failing one request never blocks a run's end.
- ``REJECT`` — any other answer (400 and other 4xx): the request is dropped — bisected
  first when it carries many values, so one bad key loses only itself — and what it
  carried is counted as lost.
"""

from __future__ import annotations

import random
import re
import time

OUTAGE = "outage"
RETRY = "retry"
REJECT = "reject"

MAX_ATTEMPTS = 3
"""Tries of one request the server answers with 429 or 5xx before it counts as rejected."""
OUTAGE_PROBE_S = 0.5
"""Longest wait between tries while the server cannot be reached."""

_RETRY_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
})
_OUTAGE_NAMES = frozenset({"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout",
                           "ConnectionRefusedError", "ConnectionResetError",
                           "RemoteDisconnected", "ProtocolError", "MaxRetryError"})
_CODE_IN_TEXT = re.compile(r"(?:error code|status code|status)\s*:?\s*(\d{3})")
# urllib3 gives up on a status its retry policy lists with "too many 500 error responses":
# the server answered, so it is not an outage.
_TOO_MANY = re.compile(r"too many (\d{3}) error responses")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an MLflow or requests error carries, if any."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    text = str(exc)
    many = _TOO_MANY.search(text)
    if many:
        return int(many.group(1))
    found = _CODE_IN_TEXT.search(text)
    if found and "API request to" in text:
        return int(found.group(1))
    getter = getattr(exc, "get_http_status_code", None)
    if callable(getter) and getattr(exc, "error_code", None) != "INTERNAL_ERROR":
        try:
            value = getter()
        except Exception:
            return None
        return value if isinstance(value, int) else None
    return None


def classify(exc: BaseException) -> str:
    """:data:`OUTAGE`, :data:`RETRY` or :data:`REJECT` (see the module docstring)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return OUTAGE
    text = str(exc)
    answered = _TOO_MANY.search(text)
    if answered:
        return RETRY if int(answered.group(1)) == 429 or int(answered.group(1)) >= 500 \
            else REJECT
    if "database is locked" in text or "could not connect to server" in text \
            or "Connection refused" in text:
        return OUTAGE
    name = type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if name in _OUTAGE_NAMES or (cause is not None and type(cause).__name__ in _OUTAGE_NAMES):
        return OUTAGE
    if "API request to" in text and ("failed with exception" in text or "timeout" in text
                                     or "Max retries exceeded" in text):
        return OUTAGE
    if getattr(exc, "error_code", None) in _RETRY_CODES:
        return RETRY
    status = http_status(exc)
    if status is not None and (status == 429 or status >= 500):
        return RETRY
    if name == "OperationalError":
        return OUTAGE  # a SQL store that went away
    return REJECT


class Backoff:
    """Exponential backoff with jitter, 0.25 s doubling to a cap; reset on success."""

    def __init__(self, first_s: float = 0.25, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0
        self.retry_at = 0.0
        self.down_since: float | None = None
        self.last_error: str | None = None

    def failed(self, exc: BaseException, *, cap_s: float | None = None) -> float:
        """Record a failure; returns the delay before the next try."""
        self.failures += 1
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        cap = self.cap_s if cap_s is None else min(cap_s, self.cap_s)
        delay = min(cap, self.first_s * 2.0 ** min(self.failures - 1, 16))
        delay *= random.uniform(0.8, 1.0)
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
