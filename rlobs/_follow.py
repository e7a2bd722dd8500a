"""Following run logs as they grow: complete lines from an offset, and the writer's life.

Every reader of a live log — the shipper, ``rlobs sync``, ``rlobs tail`` — goes through
here, so they agree on what a log holds: only whole lines (a line still being written is
held back until its newline arrives), torn and unreadable lines skipped and counted.

A live run's writer holds an exclusive ``flock`` on its log (see :mod:`rlobs._writer`).
When the lock is free and the log has no end, the writer died (SIGKILL, OOM, power): :func:`seal`
then cuts a torn last line and appends the end the writer could not write — ``killed``,
with the counts of the last step on disk — so the log, and every sink fed from it,
agree on how the run ended.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._codec import decode_line, to_line
from ._events import Event, RunEnd, RunStart, RunStatus, Span, Step

_READ = 1 << 20
_TAIL = 1 << 16


@dataclass
class Cursor:
    """Where one reader is in one log."""

    path: Path
    offset: int = 0
    bad_lines: int = 0

    def read(self, max_bytes: int = _READ) -> list[Event]:
        """The complete events after ``offset`` (up to about ``max_bytes``); advances.

        One ``pread``: a buffered read may take several, and a sealer cutting a torn
        tail between them would splice its new line onto the old tail's bytes.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            data = os.pread(fd, max_bytes, self.offset)
        except OSError:
            return []
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        events: list[Event] = []
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                events.append(decode_line(line))
            except (ValueError, TypeError, KeyError):
                self.bad_lines += 1
        self.offset += end + 1
        return events


def size_of(path: Path) -> int:
    """The log's size now (0 if it is gone)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def first_event(path: Path) -> RunStart | None:
    """The run start on a log's first line, or ``None`` (not a log, or not written yet)."""
    try:
        with path.open("rb") as handle:
            line = handle.readline(1 << 20)
    except OSError:
        return None
    if not line.endswith(b"\n"):
        return None
    try:
        event = decode_line(line)
    except (ValueError, TypeError, KeyError):
        return None
    return event if isinstance(event, RunStart) else None


def writer_alive(path: Path) -> bool:
    """Whether a live process holds the writer's lock on this log (this host only)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # locked by the writer
    else:
        return False
    finally:
        os.close(fd)  # also drops the shared lock just taken


def _tail_lines(path: Path, block: int = _TAIL) -> tuple[list[bytes], bool]:
    """Complete lines at the end of the log (as many as the last blocks hold), and
    whether the log ends in a torn line."""
    size = size_of(path)
    with path.open("rb") as handle:
        while True:
            start = max(0, size - block)
            handle.seek(start)
            data = handle.read(size - start)
            lines = data.split(b"\n")
            torn = lines.pop() != b""
            if start > 0:
                lines = lines[1:]  # the first may be cut by the block boundary
            if any(line.startswith(b'{"type":"step"') for line in lines) or start == 0 \
                    or block >= 1 << 26:
                return [line for line in lines if line.strip()], torn
            block *= 4


def last_events(path: Path) -> tuple[Event | None, Step | None]:
    """The log's last complete event and its last step (read from the end: O(1))."""
    lines, _ = _tail_lines(path)
    last: Event | None = None
    step: Step | None = None
    for line in reversed(lines):
        try:
            event = decode_line(line)
        except (ValueError, TypeError, KeyError):
            continue
        last = last or event
        if isinstance(event, Step):
            step = event
            break
    return last, step


def ended(path: Path) -> bool:
    """Whether the log's last complete event is a run end."""
    last, _ = last_events(path)
    return isinstance(last, RunEnd)


def seal(path: Path, start: RunStart, why: str) -> RunEnd | None:
    """End the log of a run whose writer died: cut a torn last line, append ``killed``.

    Holds the log's lock while it does, so it never races a live writer, a writer that
    resumes the run, or another sealer. Returns the end appended, or ``None`` (the writer
    is alive, or the log already ends with an end).
    """
    try:
        handle = path.open("r+b")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # a live writer holds it
        last, step = last_events(path)
        if isinstance(last, RunEnd):
            return None
        end = _killed_end(start, last, step, why)
        keep = _after_last_newline(handle, size_of(path))
        handle.truncate(keep)
        handle.seek(keep)
        handle.write(to_line(end))
    return end


def _killed_end(start: RunStart, last: Event | None, step: Step | None, why: str) -> RunEnd:
    end_ns = start.time_ns
    if last is not None:
        end_ns = max(end_ns, last.end_ns if isinstance(last, Span) else last.time_ns)
    steps, total, episodes = 0, 0.0, 0
    if step is not None:
        steps, total = step.step + 1, step.cumulative_reward
        episodes = step.episode + (step.episode_return is not None)
    return RunEnd(start.run_id, RunStatus.KILLED, steps, total, episodes,
                  (end_ns - start.time_ns) / 1e9, why, {}, 0, end_ns)


def resume_point(fd: int, path: Path) -> Step | None:
    """Make a log ready for a run that continues it, on the writer's locked ``fd``: cut
    a torn last line, end ``killed`` a segment whose writer died; return its last step.
    """
    if size_of(path) == 0:
        return None
    with path.open("rb") as handle:
        keep = _after_last_newline(handle, size_of(path))
    os.ftruncate(fd, keep)
    start = first_event(path)
    last, step = last_events(path)
    if start is not None and last is not None and not isinstance(last, RunEnd):
        pid = start.tags.get("rlobs.pid", "?") if start.tags else "?"
        end = _killed_end(_segment_start(path) or start, last, step,
                          f"the process writing the run (pid {pid}) died without ending it; "
                          "ended when the run was resumed")
        os.write(fd, to_line(end))
    return step


def _segment_start(path: Path) -> RunStart | None:
    """The start of the log's last segment (a resumed run has one start per segment)."""
    lines, _ = _tail_lines(path, block=1 << 20)
    for line in reversed(lines):
        if line.startswith(b'{"type":"run_start"') or b'"type":"run_start"' in line[:40]:
            try:
                event = decode_line(line)
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(event, RunStart):
                return event
    return None


def _after_last_newline(handle: BinaryIO, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none)."""
    position = size
    while position > 0:
        start = max(0, position - _TAIL)
        handle.seek(start)
        cut = handle.read(position - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        position = start
    return 0
