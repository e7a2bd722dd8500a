"""JSONL sink: the local record of truth, one ``<run_id>.jsonl`` file per run.

The first line is the run start and the last the run end; every line carries the schema
version. Lines are written whole and handed to the OS after every batch, so a crash (even
SIGKILL) leaves every delivered line readable and at worst one torn last line, which
:func:`rlobs.read_run` reports instead of failing.

It never drops at a rate a healthy disk sustains: its queue is large and it makes the
producer wait (``Overflow.BLOCK``) rather than drop, for up to ``block_timeout_s``.

Environment: ``RLOBS_JSONL_DIR`` (default ``./rlobs-runs``), ``RLOBS_JSONL_FSYNC``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from rlobs import (
    Artifact,
    Heartbeat,
    Overflow,
    RunEnd,
    RunStart,
    RunUpdate,
    Sink,
    Span,
    Step,
    environment_variables,
    event_to_line,
)
from rlobs._settings import env_bool

DEFAULT_DIR = "rlobs-runs"


class JsonlSink(Sink):
    """Writes each run's events to ``<directory>/<run_id>.jsonl``.

    Args:
        directory: where run files go (created if missing).
        fsync: fsync each file when its run ends.
    """

    name = "jsonl"
    overflow = Overflow.BLOCK
    capacity = 1 << 18
    block_timeout_s = 5.0

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR, *,
                 fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self._files: dict[str, IO[str]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JsonlSink:
        directory = env.get(environment_variables.RLOBS_JSONL_DIR) or DEFAULT_DIR
        return cls(directory, fsync=env_bool(environment_variables.RLOBS_JSONL_FSYNC, False,
                                              env=env))

    @classmethod
    def selected_by_default(cls, env: Mapping[str, str]) -> bool:
        return True

    def path_for(self, run_id: str) -> Path:
        """The file a run's events go to."""
        return self.directory / f"{run_id}.jsonl"

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _write(self, run_id: str, line: str) -> None:
        handle = self._files.get(run_id)
        if handle is None:
            handle = self.path_for(run_id).open("a", encoding="utf-8", buffering=1 << 16)
            self._files[run_id] = handle
        handle.write(line)

    def on_run_start(self, event: RunStart) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_step(self, event: Step) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_span(self, event: Span) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_run_update(self, event: RunUpdate) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_artifact(self, event: Artifact) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_heartbeat(self, event: Heartbeat) -> None:
        self._write(event.run_id, event_to_line(event))

    def on_run_end(self, event: RunEnd) -> None:
        self._write(event.run_id, event_to_line(event))
        handle = self._files.pop(event.run_id)
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())
        handle.close()

    def flush(self) -> None:
        for handle in self._files.values():
            handle.flush()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def detail(self) -> str | None:
        return f"writing to {self.directory}"
