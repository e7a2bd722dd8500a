"""rlobs' logger: the standard library's ``logging.getLogger("rlobs")``.

Call sites pass an event and key/value context (``logger.warning("sink unavailable",
sink="mlflow", reason=...)``); the record's message is ``event key=value ...`` and the
context is also on the record as ``record.rlobs`` (a dict) for structured handlers.
Values are redacted like everything rlobs records (:mod:`rlobs._params`).

Nothing is printed on stdout. An application that configures no logging sees warnings
and errors on stderr (the standard library's last-resort handler); one that configures
logging gets rlobs' records like any library's, filterable by the ``rlobs`` name. Call
sites log each cause once or on a doubling count (1st, 2nd, 4th, ...), never per step.
"""

from __future__ import annotations

import logging
from typing import Any

from ._params import REDACTED, is_secret_key, redact_text

NAME = "rlobs"


def _text(key: str, value: Any) -> str:
    if is_secret_key(key):
        return REDACTED
    text = redact_text(str(value))
    if len(text) > 120:
        text = text[:117] + "..."
    return repr(text) if (" " in text or not text or not text.isprintable()) else text


class Logger:
    """A :class:`logging.Logger` taking key/value context after the event."""

    __slots__ = ("_log",)

    def __init__(self, name: str = NAME) -> None:
        self._log = logging.getLogger(name)

    def _emit(self, level: int, event: str, context: dict[str, Any]) -> None:
        if self._log.isEnabledFor(level):
            clean = {k: _text(k, v) for k, v in context.items()}
            message = " ".join([event, *(f"{k}={v}" for k, v in clean.items())])
            self._log.log(level, "%s", message, extra={"rlobs": clean}, stacklevel=3)

    def debug(self, event: str, **context: Any) -> None:
        """Log at DEBUG."""
        self._emit(logging.DEBUG, event, context)

    def info(self, event: str, **context: Any) -> None:
        """Log at INFO."""
        self._emit(logging.INFO, event, context)

    def warning(self, event: str, **context: Any) -> None:
        """Log at WARNING."""
        self._emit(logging.WARNING, event, context)

    def error(self, event: str, **context: Any) -> None:
        """Log at ERROR."""
        self._emit(logging.ERROR, event, context)


logger = Logger()
"""The one logger every rlobs module and built-in sink uses."""
