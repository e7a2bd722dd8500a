"""Errors rlobs raises.

::

    RlobsError
     ├── ConfigError          bad configuration, raised when a hub is built (fail fast)
     │    └── UnknownSinkError    a sink name no installed package registers
     ├── SinkUnavailable      raised by ``Sink.open``: the sink cannot run here (missing
     │                        optional dependency, unreachable service); the hub marks it
     │                        unavailable and carries on without it
     ├── HubClosedError       a run was asked of a hub that is closed
     ├── InvalidRunId         a run id that is not a safe file name (also a ValueError)
     └── RunFileError         a file is not an rlobs run log, or a run's log cannot be
                              written (another live process writes that run)

    ConfigWarning             a bad environment value was ignored (a default is used)

Errors raised by a sink's hooks never reach the agent loop: the hub logs and counts them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class RlobsError(Exception):
    """Base class of every error rlobs raises."""


class ConfigError(RlobsError):
    """The configuration cannot work; raised when the hub is built."""


class UnknownSinkError(ConfigError):
    """A sink name that no installed package registers."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown sink {name!r}{did_you_mean(name, self.known)}; known sinks: "
            f"{', '.join(self.known) or '(none)'} (or 'none' to disable all)"
        )


class SinkUnavailable(RlobsError):
    """Raised by ``Sink.open`` when the sink cannot run; the message says why and how to fix."""


class HubClosedError(RlobsError):
    """The hub is closed and takes no new runs."""


class InvalidRunId(RlobsError, ValueError):
    """A run id that is not a safe file name; raised by ``Hub.run``."""


class RunFileError(RlobsError):
    """The file is not an rlobs run log, or a run's log cannot be written."""


class ConfigWarning(UserWarning):
    """A bad configuration value was ignored and a default used instead."""
