"""The run-log writer: every run hands it its chunks; it writes the log and feeds the
in-process sinks. The one fan-out of the training process.

Each run's log is ``<dir>/<run_id>.jsonl``, written by this process alone: a run's hooks
append records to the run's chunk (its lock held for a few hundred nanoseconds), and one
writer thread wakes every ``interval_s`` (50 ms), takes each run's chunk, encodes it in C
(:func:`rlobs._codec.encode_chunk`) and writes it with one ``write()``. So a SIGKILL
loses at most the last interval, and what reaches the file reaches every sink
eventually — the shipper process tails these files. A loop that records more than
:data:`BACKLOG` entries within one interval (stepping flat out) writes them itself, in
one go: memory stays bounded, nothing is dropped, and no thread hand-off per chunk costs
it GIL switches (on one GIL those cost more than the encoding).

While its run is open the writer holds an exclusive ``flock`` on the file: the shipper
tells a live writer from a dead one by it (the kernel drops the lock when the process
dies, however it dies). A forked child closes its copies of the parent's logs at once,
so it never keeps a dead parent's lock alive; exec'd programs never get them
(``O_CLOEXEC``).

Lifecycle events (start, updates, artifacts, heartbeats, end) are written at once, after
the run's pending chunk, so the file keeps event order.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import wait
from pathlib import Path
from typing import Any

from ._codec import StepLine, as_event, encode_chunk, to_line
from ._events import Event, Heartbeat, RunEnd, RunStart, Step
from ._exceptions import RunFileError
from ._follow import resume_point
from ._log import logger
from ._worker import SinkWorker

BACKLOG = 4096
"""Pending entries past which a producer writes its run's backlog itself."""

Rejector = Callable[[str, Any], None]


_DRAIN_LOCK_WAIT_S = 0.05


class RunFile:
    """A run's place in the writer: its log file, and the chunk its hooks fill.

    ``lock`` and ``pending`` belong to the run (its hot path uses them directly); the
    writer empties ``pending`` under ``lock`` and writes under ``write_lock``.
    """

    __slots__ = ("careful", "fd", "last", "lock", "lost", "pending", "reject", "run_id",
                 "write_lock")

    def __init__(self, run_id: str, lock: threading.RLock, pending: list[Any],
                 reject: Rejector) -> None:
        self.run_id = run_id
        self.lock = lock
        self.pending = pending
        self.reject = reject
        self.write_lock = threading.RLock()  # re-entrant: a signal handler may end the run
        self.fd: int | None = None
        self.last: StepLine | Step | None = None  # the last step written: the end's counts
        self.lost = 0  # bytes a failing disk refused
        self.careful = False  # the chunk may hold NaN or free-form values (set under lock)


def _uncounted(key: str, value: Any) -> None:
    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Writer:
    """Writes run logs and feeds in-process sinks (module docstring).

    Args:
        directory: where run logs go; ``None`` writes none (in-process sinks only).
        workers: the in-process sinks' workers.
        fsync: fsync each log when its run ends.
        mode: permission bits of new logs (the umask applies).
        interval_s: longest time a step waits before it is written.
        heartbeat_s: seconds between heartbeat lines of each open run; 0 disables.
    """

    def __init__(self, directory: Path | None, workers: Sequence[SinkWorker], *,
                 fsync: bool = False, mode: int = 0o600, interval_s: float = 0.05,
                 heartbeat_s: float = 10.0, tick: Callable[[], object] | None = None,
                 tick_s: float = 2.0) -> None:
        self.directory = directory
        self.workers = tuple(workers)
        self.fsync = fsync
        self.mode = mode
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.tick, self.tick_s = tick, tick_s  # called on the thread while runs are open
        self.lost_bytes = 0
        self.written = 0  # events written to logs
        self._files: dict[str, RunFile] = {}
        self._event = threading.Event()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _writers.add(self)

    # ------------------------------------------------------------------ runs' side

    def path_for(self, run_id: str) -> Path | None:
        """The log file of a run (``None`` when no log is written)."""
        return None if self.directory is None else self.directory / f"{run_id}.jsonl"

    def open(self, run_id: str, lock: threading.RLock, pending: list[Any],
             reject: Rejector) -> tuple[RunFile, Step | None]:
        """Create or reopen the run's log and lock it; ``begin`` writes its start.

        A log that exists already is resumed: a torn last line is cut, a segment whose
        writer died is ended ``killed``, and the last step on disk is returned so the run
        continues its counts.

        Raises:
            RunFileError: another live process is writing this run's log, or the log
                cannot be created.
        """
        if run_id in self._files:
            raise RunFileError(f"run {run_id} is already open in this process")
        rf = RunFile(run_id, lock, pending, reject)
        path = self.path_for(run_id)
        last = None
        if path is not None:
            rf.fd = _open_locked(path, self.mode)
            try:
                last = resume_point(rf.fd, path)
            except OSError as exc:
                self._refused(rf, 0, exc)
        rf.last = last
        return rf, last

    def begin(self, rf: RunFile, start: RunStart) -> None:
        """Write the run's start line; the run is open from here on."""
        self._files[rf.run_id] = rf
        self._ensure_thread()
        self._write(rf, [], start)

    def abort(self, rf: RunFile) -> None:
        """Give up a run that was opened but never began."""
        self._close_file(rf)

    def wake(self) -> None:
        """A chunk filled up: write it soon (never waits)."""
        if not self._woken:
            self._woken = True
            self._event.set()

    def drain(self, rf: RunFile) -> None:
        """Write what the run's chunk holds now (on the caller's thread)."""
        with rf.write_lock, _signals_held():
            # Bounded: a signal handler on the main thread may hold the run's lock (it
            # interrupted a step) while it waits for ``write_lock`` to end the run; the
            # writer thread lets go and comes back on its next tick.
            if not rf.lock.acquire(timeout=_DRAIN_LOCK_WAIT_S):
                return
            try:
                items, careful = rf.pending.copy(), rf.careful
                rf.pending.clear()
                rf.careful = False
            finally:
                rf.lock.release()
            if items:
                self._write(rf, items, None, careful)

    def emit(self, rf: RunFile, event: Event) -> None:
        """Write a lifecycle event after everything the run recorded before it."""
        with rf.write_lock, _signals_held():
            with rf.lock:
                items, careful = rf.pending.copy(), rf.careful
                rf.pending.clear()
                rf.careful = False
            self._write(rf, items, event, careful)

    def end(self, rf: RunFile,
            make_end: Callable[[StepLine | Step | None, dict[str, int]], RunEnd],
            *, settle_s: float, lock_wait_s: float) -> RunEnd:
        """Write the run's last chunk, settle the in-process sinks, write its end, close.

        ``make_end(last_step, dropped)`` builds the end from the last step written and
        each in-process sink's count of this run's events it never got. Locks are waited
        for at most ``lock_wait_s``: a signal handler may end a run mid-step.
        """
        locked = rf.write_lock.acquire(timeout=lock_wait_s)
        try:
            got = rf.lock.acquire(timeout=lock_wait_s)
            try:
                items = rf.pending.copy()
                rf.pending.clear()
            finally:
                if got:
                    rf.lock.release()
            if items:
                self._write(rf, items, None, True)
            end = make_end(rf.last, self._settle(rf.run_id, settle_s))
            self._write(rf, [], end)
            self._close_file(rf)
        finally:
            if locked:
                rf.write_lock.release()
        return end

    def _settle(self, run_id: str, timeout_s: float) -> dict[str, int]:
        """Give every in-process sink ``timeout_s`` to take the run's events; count the
        rest as dropped."""
        workers = [w for w in self.workers if w.accepting]
        futures = {w.barrier(): w for w in workers}
        _, late = wait(futures, timeout=timeout_s)
        for future in late:
            futures[future].abandon(run_id)
        return {w.name: n for w in workers if (n := w.take_dropped(run_id))}

    def open_runs(self) -> list[RunFile]:
        """Runs whose log is open."""
        return list(self._files.values())

    def flush(self) -> None:
        """Write every run's pending chunk now."""
        for rf in self.open_runs():
            self.drain(rf)

    def close(self) -> None:
        """Stop the thread (open runs must have been ended first). Idempotent."""
        self._stopping = True
        self._event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        for rf in self.open_runs():
            self._close_file(rf)

    # ------------------------------------------------------------------ writing

    def _write(self, rf: RunFile, items: list[Any], event: Event | None,
               careful: bool = False) -> None:
        """Encode and write items (and an event after them); then feed the workers."""
        if rf.fd is not None:
            data = encode_chunk(items, rf.reject, careful) if items else b""
            if event is not None:
                data += to_line(event)
            if data:
                try:
                    _write_all(rf.fd, data)
                except OSError as exc:
                    self._refused(rf, len(data), exc)
                else:
                    self.written += len(items) + (event is not None)
        for item in reversed(items):
            if item.__class__ is StepLine:
                rf.last = item
                break
        if self.workers:
            self._feed(rf, items, event)

    def _feed(self, rf: RunFile, items: list[Any], event: Event | None) -> None:
        if items:
            # Values the encoder left out were counted when the chunk was written.
            reject = rf.reject if rf.fd is None else _uncounted
            events = [as_event(item, reject) for item in items]
            for worker in self.workers:
                worker.offer_batch(events, rf.run_id, block=True)
        if event is not None:
            for worker in self.workers:
                worker.offer(event)

    def _refused(self, rf: RunFile, size: int, exc: OSError) -> None:
        first = rf.lost == 0
        rf.lost += size
        self.lost_bytes += size
        if first:
            logger.error("run log write failed; the run goes on without its log",
                         run_id=rf.run_id, error=f"{type(exc).__name__}: {exc}")

    def _close_file(self, rf: RunFile) -> None:
        self._files.pop(rf.run_id, None)
        fd, rf.fd = rf.fd, None
        if fd is None:
            return
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._refused(rf, 0, exc)
        finally:
            os.close(fd)  # also releases the writer's lock on it

    # ------------------------------------------------------------------ the thread

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._stopping = False
            self._thread = threading.Thread(target=self._main, name="rlobs-writer",
                                            daemon=True)
            self._thread.start()

    def _main(self) -> None:
        beat_at = time.monotonic() + self.heartbeat_s
        tick_at = time.monotonic() + self.tick_s
        while not self._stopping:
            self._event.wait(self.interval_s)
            self._event.clear()
            self._woken = False
            try:
                for rf in self.open_runs():
                    if rf.pending:
                        self.drain(rf)
                if self.heartbeat_s > 0 and time.monotonic() >= beat_at:
                    beat_at = time.monotonic() + self.heartbeat_s
                    self._beat()
                if self.tick is not None and self._files and time.monotonic() >= tick_at:
                    tick_at = time.monotonic() + self.tick_s
                    self.tick()
            except Exception as exc:  # the writer must outlive any one bad chunk
                logger.error("run log writer error", error=f"{type(exc).__name__}: {exc}")

    def _beat(self) -> None:
        for rf in self.open_runs():
            last = rf.last
            self.emit(rf, Heartbeat(rf.run_id, 0 if last is None else last.step + 1,
                                    time.time_ns()))

    def _after_fork_in_child(self) -> None:
        """The child has no writer thread and must not touch the parent's logs."""
        for rf in self._files.values():
            if rf.fd is not None:
                os.close(rf.fd)
                rf.fd = None
        self._files.clear()
        self._event = threading.Event()
        self._woken = False
        self._thread = None
        self.workers = ()  # in-process sinks stay with the parent


_MAIN = threading.main_thread()
_writing = 0  # depth of write sections on the main thread
_deferred: list[int] = []  # signals that arrived inside one


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A write section: records taken and written. On the main thread, a SIGINT or
    SIGTERM that arrives inside it is handled right after it (see :func:`defer_signal`),
    so a handler that ends runs never interrupts a write, and the end it writes counts
    exactly what the log holds."""
    global _writing
    if threading.current_thread() is not _MAIN:
        yield
        return
    _writing += 1
    try:
        yield
    finally:
        _writing -= 1
        if not _writing and _deferred:
            signal.raise_signal(_deferred.pop())


def defer_signal(signum: int) -> bool:
    """Called first by rlobs' signal handlers: True if the main thread is inside a write
    section, in which case the signal is raised again when the section ends."""
    if _writing and threading.current_thread() is _MAIN:
        if signum not in _deferred:
            _deferred.append(signum)
        return True
    return False


def _open_locked(path: Path, mode: int) -> int:
    """Open a run log for appending and take the writer's lock on it.

    Raises:
        RunFileError: the file is locked by another live process, or cannot be opened.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise RunFileError(f"cannot write the run log {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise RunFileError(f"{path} is being written by another live process; "
                           "use another run_id") from exc
    return fd


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
