"""``rlobs tail [RUN]``: watch a run another process is still writing.

The file's events are fed, as a hub would feed them, to the ``console`` sink — the same
live line and end-of-run summary as ``RLOBS_SINKS=console`` in the writing process.
It exits when the run's end arrives: 0 if the run finished, 1 if it failed or was
killed; 1 after ``--timeout`` seconds without a new event; Ctrl-C stops it (130). A path
that cannot name a run log is an error (exit 2).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from ._events import TYPE_NAMES, Event, RunEnd, Span
from ._exceptions import RlobsError, RunFileError
from ._follow import Cursor, first_event
from ._registry import BrokenSink, load_sink_class
from ._sink import Sink
from ._tally import LATEST, latest_run, list_runs, log_dir, resolve_run

_POLL_S = 0.1


def follow(path: Path, *, timeout_s: float | None = None,
           poll_s: float = _POLL_S) -> Iterator[Event | None]:
    """Events of a growing JSONL file as whole lines arrive; ``None`` while idle.

    Waits for the file to appear. A line still being written is held back until its
    newline arrives; lines that do not parse are skipped.

    Raises:
        TimeoutError: no new event (nor the file) for ``timeout_s`` seconds.
    """
    last = time.monotonic()

    def idle() -> None:
        if timeout_s is not None and time.monotonic() - last >= timeout_s:
            what = "the file did not appear" if not path.exists() else "no new event"
            raise TimeoutError(f"{what} in {timeout_s:g} s: {path} (is its writer alive?)")
        time.sleep(poll_s)

    while not path.exists():
        yield None
        idle()
    cursor = Cursor(path)  # whole lines only, as every reader of a live log
    while True:
        events = cursor.read()
        if not events:
            yield None
            idle()
            continue
        last = time.monotonic()
        yield from events


def tail_target(spec: str, *, timeout_s: float | None = None,
                poll_s: float = _POLL_S) -> Path:
    """The run log ``rlobs tail SPEC`` follows: a ``.jsonl`` file (waited for if its
    directory exists), a directory or ``latest`` (its latest run, waited for if it has
    none yet), or a run id of ``RLOBS_JSONL_DIR``.

    Raises:
        RunFileError: ``spec`` cannot name a run log.
        TimeoutError: no run appeared in the directory within ``timeout_s``.
    """
    folder = log_dir() if spec == LATEST else Path(spec)
    if folder.is_dir():
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        announced = False
        while not list_runs(folder):
            if not announced:
                notice(f"waiting for a run log in {folder} (Ctrl-C to stop)")
                announced = True
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no run log appeared in {folder} in {timeout_s:g} s")
            time.sleep(poll_s)
        return latest_run(folder)
    try:
        path = resolve_run(spec)
    except RunFileError:
        path = Path(spec)
        if path.suffix != ".jsonl" or not path.parent.is_dir():
            raise
        notice(f"waiting for {path} to appear (Ctrl-C to stop)")
        return path
    if first_event(path) is None and _has_a_line(path):
        raise RunFileError(f"{path} is not an rlobs run log (no run_start on its first line)")
    return path


def _has_a_line(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\n" in handle.read(1 << 20)


def notice(text: str) -> None:
    """A word to the person at the terminal, on standard error."""
    from ._cli import errors

    errors().print(f"[dim]{escape(text)}[/dim]")


def console_sink() -> Sink:
    """The registered ``console`` sink, configured from the environment.

    Raises:
        RlobsError: it is not installed or cannot be configured.
    """
    cls = load_sink_class("console")
    sink = cls if isinstance(cls, BrokenSink) else cls.from_env(os.environ)
    if isinstance(sink, BrokenSink):
        raise RlobsError(f"the console sink is unavailable: {sink.reason}")
    return sink


def hooks_of(sink: Sink) -> dict[type, Callable[[Any], None]]:
    """The sink hook each event type goes to."""
    return {cls: getattr(sink, f"on_{name}") for cls, name in TYPE_NAMES.items()}


def watch(path: Path, sink: Sink, *, timeout_s: float | None = None) -> RunEnd:
    """Feed the run at ``path`` to ``sink`` until its end arrives (the last segment's,
    for a log whose run id was reused).

    Raises:
        TimeoutError: no run end within ``timeout_s``.
    """
    hooks = hooks_of(sink)
    sink.open()
    end: RunEnd | None = None
    try:
        for event in follow(path, timeout_s=timeout_s):
            if event is None:
                if end is not None:  # the end, and nothing after it: no resumed segment
                    return end
                sink.flush()
            elif type(event) is not Span or sink.wants_spans:
                hooks[type(event)](event)
                end = event if type(event) is RunEnd else None
        raise AssertionError("unreachable: follow() only stops by raising")
    finally:
        sink.flush()
        sink.close()


def _cmd_tail(args: argparse.Namespace) -> int:
    from ._cli import console

    if args.timeout is not None and args.timeout <= 0:
        raise RlobsError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    try:
        path = tail_target(args.path, timeout_s=args.timeout)
        end = watch(path, console_sink(), timeout_s=args.timeout)
    except TimeoutError as exc:
        console().print(f"[yellow]{escape(str(exc))}[/yellow]")
        return 1
    return 0 if end.completed else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs tail RUN.jsonl [--timeout S]``."""
    parser = sub.add_parser("tail", help="watch a run being written by another process "
                            "(live line, summary at its end)")
    parser.add_argument("path", metavar="RUN", nargs="?", default=LATEST,
                        help="the run's .jsonl file (waited for if missing), a directory "
                        "(its latest run), a run id, or 'latest' (the default)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="give up (exit 1) after this long without a new event")
    parser.set_defaults(func=_cmd_tail)
