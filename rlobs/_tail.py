"""``rlobs tail RUN.jsonl``: watch a run another process is still writing.

The file's events are fed, as a hub would feed them, to the ``console`` sink — the same
live line and end-of-run summary as ``RLOBS_SINKS=console`` in the writing process.
It exits when the run's end arrives: 0 if the run finished, 1 if it failed or was
killed; 1 at ``--timeout``; Ctrl-C stops it (130).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._codec import from_line
from ._events import TYPE_NAMES, Event, RunEnd, Span
from ._exceptions import RlobsError
from ._registry import BrokenSink, load_sink_class
from ._sink import Sink

_POLL_S = 0.1


def follow(path: Path, *, timeout_s: float | None = None,
           poll_s: float = _POLL_S) -> Iterator[Event | None]:
    """Events of a growing JSONL file as whole lines arrive; ``None`` while idle.

    Waits for the file to appear. A line still being written is held back until its
    newline arrives; lines that do not parse are skipped.

    Raises:
        TimeoutError: ``timeout_s`` passed (the caller stops iterating at a run end).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def idle() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no run end in {path} after {timeout_s:g}s")
        time.sleep(poll_s)

    while not path.exists():
        yield None
        idle()
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as handle:
        pending = ""
        while True:
            chunk = handle.read(1 << 16)
            if not chunk:
                yield None
                idle()
                continue
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                try:
                    yield from_line(line) if line.strip() else None
                except (ValueError, TypeError, KeyError):
                    continue


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
    """Feed the run at ``path`` to ``sink`` until its end arrives.

    Raises:
        TimeoutError: no run end within ``timeout_s``.
    """
    hooks = hooks_of(sink)
    sink.open()
    try:
        for event in follow(path, timeout_s=timeout_s):
            if event is None:
                sink.flush()
            elif type(event) is not Span or sink.wants_spans:
                hooks[type(event)](event)
                if type(event) is RunEnd:
                    return event
        raise AssertionError("unreachable: follow() only stops by raising")
    finally:
        sink.flush()
        sink.close()


def _cmd_tail(args: argparse.Namespace) -> int:
    from ._cli import console

    try:
        end = watch(Path(args.path), console_sink(), timeout_s=args.timeout)
    except TimeoutError as exc:
        console().print(f"[yellow]{exc}[/yellow]")
        return 1
    return 0 if end.completed else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs tail RUN.jsonl [--timeout S]``."""
    parser = sub.add_parser("tail", help="watch a run being written by another process "
                            "(live line, summary at its end)")
    parser.add_argument("path", help="the run's .jsonl file (waited for if missing)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="give up (exit 1) if the run has not ended after this long")
    parser.set_defaults(func=_cmd_tail)
