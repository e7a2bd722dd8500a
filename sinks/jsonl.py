"""JSONL: the run log, the local record of truth — one ``<run_id>.jsonl`` file per run.

Selecting ``jsonl`` (the default) turns the run log on and says where it goes; the hub's
writer writes it itself, in the training process, with a C encoder and one ``write()``
per chunk of steps (see docs/core.md). It is also the transport of the sinks that run in
the shipper process: when one of them is selected, the log is written even without
``jsonl``.

The first line is the run start and the last the run end; every line carries the schema
version. A crash — even SIGKILL — leaves every line written more than ~50 ms earlier
readable and at worst one torn last line, which :func:`rlobs.read_run` reports instead
of failing (and which the shipper cuts when it ends the dead run ``killed``).

Environment: ``RLOBS_JSONL_DIR`` (default ``./rlobs-runs``), ``RLOBS_JSONL_FSYNC``,
``RLOBS_JSONL_MODE`` (octal permission bits, default ``600``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from rlobs import ConfigWarning, Sink, env_bool, environment_variables

DEFAULT_DIR = "rlobs-runs"


class JsonlSink(Sink):
    """The run log's configuration: ``<directory>/<run_id>.jsonl`` per run.

    Args:
        directory: where run logs go (created if missing).
        fsync: fsync each log when its run ends (survives power loss).
        mode: permission bits of new logs (the umask applies); default ``0o600``.
    """

    name = "jsonl"
    run_log = True

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR, *,
                 fsync: bool = False, mode: int = 0o600) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.mode = mode

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JsonlSink:
        directory = env.get(environment_variables.RLOBS_JSONL_DIR) or DEFAULT_DIR
        return cls(directory,
                   fsync=env_bool(environment_variables.RLOBS_JSONL_FSYNC, False, env=env),
                   mode=_mode(env.get(environment_variables.RLOBS_JSONL_MODE)))

    @classmethod
    def selected_by_default(cls, env: Mapping[str, str]) -> bool:
        return True

    def path_for(self, run_id: str) -> Path:
        """The file a run's events go to."""
        return self.directory / f"{run_id}.jsonl"

    def detail(self) -> str | None:
        return f"writing to {self.directory}"


def _mode(raw: str | None) -> int:
    if not raw or not raw.strip():
        return 0o600
    try:
        mode = int(raw.strip(), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        warnings.warn(f"{environment_variables.RLOBS_JSONL_MODE}={raw!r} is not octal "
                      "permission bits (e.g. 600); using 600", ConfigWarning, stacklevel=3)
        return 0o600
    return mode
