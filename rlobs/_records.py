"""What the shipper keeps beside the run logs, under ``<log dir>/.rlobs/``.

- ``shipper-<config>.lock``: held (``flock``) by the live shipper of one configuration;
  how processes find it and how a second one knows to exit.
- ``shipper-<config>.json``: its status, rewritten every second: its sinks, and for each
  run it ships, how far each sink got (``rlobs status`` shows it).
- ``shipper-<config>.log``: its own log lines.
- ``runs/<run_id>.json``: the delivery record of a run: for each sink, whether it holds
  the whole run (``complete``), gave up on part of it (``incomplete``, with what is
  missing), and what it lost. ``rlobs show``, ``rlobs sync`` and ``Hub.flush`` read it.

Every file is replaced atomically (written aside, then renamed), so readers never see a
half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_DIR = ".rlobs"


def state_dir(directory: Path) -> Path:
    """The folder of the shipper's files inside a log directory."""
    return directory / STATE_DIR


def shipper_file(directory: Path, digest: str, suffix: str) -> Path:
    """``.rlobs/shipper-<digest>.<suffix>``."""
    return state_dir(directory) / f"shipper-{digest}.{suffix}"


def delivery_file(directory: Path, run_id: str) -> Path:
    """The delivery record of a run."""
    return state_dir(directory) / "runs" / f"{run_id}.json"


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"), default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """``path`` as JSON, or ``None`` if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record_delivery(directory: Path, run_id: str, sink: str, entry: dict[str, Any]) -> None:
    """Set one sink's entry in a run's delivery record (other sinks' entries kept)."""
    path = delivery_file(directory, run_id)
    record = read_json(path) or {}
    sinks = record.setdefault("sinks", {})
    sinks[sink] = entry
    write_json(path, record)


def deliveries(directory: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """Each sink's entry in a run's delivery record (empty if none)."""
    record = read_json(delivery_file(directory, run_id)) or {}
    sinks = record.get("sinks")
    return sinks if isinstance(sinks, dict) else {}


def shipper_statuses(directory: Path) -> list[dict[str, Any]]:
    """The status of every shipper that ships from ``directory`` (live or last seen)."""
    out = []
    for path in sorted(state_dir(directory).glob("shipper-*.json")):
        status = read_json(path)
        if isinstance(status, dict):
            out.append(status)
    return out

