"""Guaranteed close: SIGTERM, interpreter exit and fork, for every live hub.

- SIGTERM: if no other handler is installed (and ``RLOBS_HANDLE_SIGNALS`` allows), every
  open run of every hub is ended ``killed`` (bounded by ``RLOBS_END_TIMEOUT_S``), then
  ``SystemExit(128 + SIGTERM)`` unwinds the program so its own ``finally`` blocks run and
  the exit status is the conventional 143. A handler the application installed before is
  called instead of raising.
- SIGINT: Python raises KeyboardInterrupt and the run's ``with`` block ends it ``killed``.
  While a hub is running (and SIGINT has Python's default handler) rlobs wraps that
  handler so the KeyboardInterrupt is raised right after a write of a run log rather
  than inside it.
- Interpreter exit: an ``atexit`` hook closes every live hub; runs still open end
  ``killed``. The hub's threads are daemons, so a hung sink cannot block exit.
- fork: the child inherits no hub thread and none of the parent's open runs; its hubs
  start afresh on first use (see ``Hub.start``) and are tracked again then.

This module knows hubs only by the few methods it calls (:class:`Closable`).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Any, Protocol

from ._events import RunStatus
from ._settings import Settings
from ._writer import defer_signal


class Closable(Protocol):
    """What the exit and signal paths need of a hub."""

    settings: Settings

    def end_open_runs(self, status: RunStatus, error: str, *,
                      lock_wait_s: float | None = None) -> None: ...

    def close(self) -> None: ...


_SIGNAL_LOCK_WAIT_S = 0.3
"""How long the SIGTERM handler waits for a run's locks: one held by this very thread
(a step it interrupted) is never released, one held by the writer thread is, within ms."""

_hubs: weakref.WeakSet[Closable] = weakref.WeakSet()
_lock = threading.Lock()
_previous: Any = None
_installed = False
_atexit_registered = False


def register(hub: Closable) -> None:
    """Track a started hub; install the exit and signal hooks on first use."""
    global _atexit_registered
    with _lock:
        _hubs.add(hub)
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
        if hub.settings.handle_signals:
            _install_sigterm()


def unregister(hub: Closable) -> None:
    """Forget a closed hub; restore the previous SIGTERM handler once none is left."""
    with _lock:
        _hubs.discard(hub)
        if not _hubs:
            _restore_sigterm()


def _install_sigterm() -> None:
    global _previous, _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current not in (signal.SIG_DFL, None) and not callable(current):
        return  # SIG_IGN: the application chose to ignore SIGTERM
    _previous = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    _installed = True


def _restore_sigterm() -> None:
    global _installed
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _installed = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """Python's own KeyboardInterrupt — just not in the middle of writing a run log."""
    global _interrupted_ns
    if defer_signal(signum):
        return
    _interrupted_ns = time.monotonic_ns()
    signal.default_int_handler(signum, frame)


_interrupted_ns = 0


def last_interrupt_ns() -> int:
    """When (``time.monotonic_ns()``) rlobs' SIGINT handler last raised KeyboardInterrupt
    in this process; 0 if it never did. An integration whose framework swallows the
    exception (a ``learn()`` that the program's own ``except KeyboardInterrupt`` ended)
    tells by it that its run was interrupted, not failed."""
    return _interrupted_ns


def kill_open_runs(reason: str, *, lock_wait_s: float | None = None) -> None:
    """End every open run of every live hub as ``killed``."""
    for hub in list(_hubs):
        hub.end_open_runs(RunStatus.KILLED, reason, lock_wait_s=lock_wait_s)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The handler runs between two bytecodes of the main thread: after a write of the run
    # log (a signal inside one is raised again when it ends), maybe inside a step holding
    # its run's lock — so locks are waited for only briefly.
    if defer_signal(signum):
        return
    kill_open_runs("terminated by SIGTERM", lock_wait_s=_SIGNAL_LOCK_WAIT_S)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    raise SystemExit(128 + signum)


def _at_exit() -> None:
    for hub in list(_hubs):
        hub.end_open_runs(RunStatus.KILLED, "the interpreter exited while the run was open")
        hub.close()


def _after_fork_in_child() -> None:
    _hubs.clear()  # the SIGTERM handler stays: it ends the child's own runs


os.register_at_fork(after_in_child=_after_fork_in_child)
