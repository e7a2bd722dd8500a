"""Reading run logs back: every complete line, and a report of what was not.

A crash — even SIGKILL mid-write — can leave the last line torn. The reader returns every
complete event and reports the torn tail instead of failing; lines in the middle that do
not parse are reported by number and skipped. Replay and the CLI read through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._codec import from_line
from ._events import Event, RunEnd, RunStart, Span, Step
from ._exceptions import RunFileError


@dataclass(frozen=True)
class RunLog:
    """A run log as read from disk."""

    path: Path
    events: tuple[Event, ...]
    torn_tail: str | None = None
    """The incomplete last line (no newline, not parseable), if the writer died mid-line."""
    bad_lines: tuple[int, ...] = field(default=())
    """1-based numbers of complete lines that could not be parsed (skipped)."""

    @property
    def start(self) -> RunStart:
        """The run's start event."""
        first = self.events[0]
        assert isinstance(first, RunStart)
        return first

    @property
    def end(self) -> RunEnd | None:
        """The run's end event, or ``None`` if the run never ended (killed hard, or live)."""
        last = self.events[-1]
        return last if isinstance(last, RunEnd) else None

    @property
    def steps(self) -> list[Step]:
        """Every step, in order."""
        return [e for e in self.events if isinstance(e, Step)]

    @property
    def spans(self) -> list[Span]:
        """Every span, in order of completion."""
        return [e for e in self.events if isinstance(e, Span)]

    @property
    def last_seen_ns(self) -> int:
        """Time of the last event: the last sign of life of a run that never ended."""
        return max(e.end_ns if isinstance(e, Span) else e.time_ns for e in self.events)


_CHUNK = 1 << 30  # one pread takes at most ~2 GiB


def _snapshot(path: Path) -> bytes:
    """The log's bytes as one ``pread`` sees them (a log under 1 GiB): a buffered read
    may take several, and a sealer cutting a torn tail between them would splice the
    line it appends onto the old tail's bytes (reported as a bad line, the end lost)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        parts: list[bytes] = []
        offset = 0
        while offset < size:
            part = os.pread(fd, min(_CHUNK, size - offset), offset)
            if not part:
                break  # cut shorter meanwhile: what was read is the log's start
            parts.append(part)
            offset += len(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def _stream(path: Path) -> Iterator[tuple[int, str, bool]]:
    """Line by line, in bounded memory (a splice as above is possible, and transient)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as handle:
        for number, line in enumerate(handle, 1):
            yield number, line, line.endswith("\n")


def _split(path: Path) -> Iterator[tuple[int, str, bool]]:
    """``(number, line, complete)`` of each line of one snapshot of the log."""
    lines = _snapshot(path).decode("utf-8", "replace").split("\n")
    tail = lines.pop()  # after the last newline: nothing, or a torn line
    for number, line in enumerate(lines, 1):
        yield number, line, True
    if tail:
        yield len(lines) + 1, tail, False


def read_run(path: str | os.PathLike[str]) -> RunLog:
    """Read a run's JSONL log.

    Raises:
        RunFileError: the file does not exist or does not start with a run start.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"no such run log: {path}")
    events: list[Event] = []
    bad: list[int] = []
    torn: str | None = None
    for number, line, complete in _split(path):
        if not line.strip():
            continue
        try:
            events.append(from_line(line))
        except (ValueError, TypeError, KeyError):
            if complete:
                bad.append(number)
            else:
                torn = line
    if not events or not isinstance(events[0], RunStart):
        raise RunFileError(f"{path} is not an rlobs run log (no run_start on its first line)")
    return RunLog(path, tuple(events), torn, tuple(bad))


def iter_events(path: str | os.PathLike[str]) -> Iterator[Event]:
    """Every complete event of a run log, in order (torn and bad lines skipped)."""
    for _, line, _complete in _stream(Path(path)):
        if line.strip():
            try:
                yield from_line(line)
            except (ValueError, TypeError, KeyError):
                continue
