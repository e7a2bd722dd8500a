"""The shipper process: one per log directory and sink configuration.

A hub whose sinks run in the shipper (MLflow, OpenTelemetry, your own with
``shipper = True``) makes sure one is alive when it starts a run: the shipper holds an
``flock`` on ``.rlobs/shipper-<config>.lock``; a free lock means none runs, and the hub
starts one (``python -c 'from rlobs._daemon import main …'``, in its own session, so
Ctrl-C and the end of the training process leave it running). It never makes the hub
wait: the shipper imports MLflow on its own time. Eight processes writing to one
directory with one configuration share one shipper, and so one MLflow client.

The configuration (the shipped sinks' names and :meth:`rlobs.Sink.ship_env`) travels in
the shipper's environment, never on disk. The shipper tails every log whose start names
its configuration, ships it (:mod:`rlobs._ship`), and exits once everything is settled
and it has been idle ``RLOBS_SHIPPER_IDLE_S``; it gives the lock up before its last look,
so a run started meanwhile is either seen by it or finds the lock free and starts a new
shipper.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import environment_variables as ev
from ._events import RunStart
from ._follow import first_event
from ._records import deliveries, read_json, shipper_file, write_json
from ._registry import build_sinks_from_spec
from ._settings import env_float
from ._ship import Shipper
from ._sink import Sink

# Its first act is to fork itself free of the process that started it (see _spawn).
_ENTRY = ("import os\nif os.fork():\n    os._exit(0)\n"
          "import sys; from rlobs._daemon import main; sys.exit(main())")
_START_GRACE_S = 30.0  # a shipper we started that has not taken its lock yet is starting

SPEC_VARIABLE = "RLOBS_SHIP_SPEC"
"""The shipped sinks, as JSON ``[{"name": ..., "env": {...}}]``, in the shipper's
environment (set by the hub that starts it)."""


def spec_of(sinks: Iterable[Sink]) -> list[dict[str, Any]]:
    """The shipped sinks' names and rebuilding variables."""
    return [{"name": s.name, "env": dict(sorted((s.ship_env() or {}).items()))}
            for s in sinks]


def digest_of(spec: list[dict[str, Any]]) -> str:
    """The configuration's name: a hash of the spec (secrets in it stay hashed)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _lock_path(directory: Path, digest: str) -> Path:
    return shipper_file(directory, digest, "lock")


def _try_lock(path: Path) -> int | None:
    """The lock file's fd with the lock held, or ``None`` if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _starting_path(directory: Path, digest: str) -> Path:
    return shipper_file(directory, digest, "starting")


def _starting(directory: Path, digest: str) -> bool:
    """Whether a shipper was started and has not taken its lock yet (its process lives)."""
    try:
        pid, spawned = _starting_path(directory, digest).read_text().split()
        if time.time() - float(spawned) > _START_GRACE_S:
            return False
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def take_shipper_lock(directory: Path, digest: str) -> int | None:
    """Become the shipper of a configuration (``rlobs sync`` does, for the runs it
    ships): the lock's fd, or ``None`` if a shipper holds it or is starting. Close the fd
    to let go.
    """
    if _starting(directory, digest):
        return None
    return _try_lock(_lock_path(directory, digest))


def shipper_alive(directory: Path, digest: str) -> bool:
    """Whether the shipper of this configuration holds its lock now, or is starting."""
    fd = _try_lock(_lock_path(directory, digest))
    if fd is None:
        return True
    os.close(fd)
    return _starting(directory, digest)


class ShipperLink:
    """The training process's side: starts the shipper, reads what it reports.

    Args:
        directory: the log directory.
        sinks: the sinks the shipper runs.
    """

    def __init__(self, directory: Path, sinks: list[Sink]) -> None:
        self.directory = directory
        self.sinks = sinks
        self.spec = spec_of(sinks)
        self.digest = digest_of(self.spec)
        self.spawned = 0
        self.spawn_error: str | None = None
        self._pid: int | None = None
        self._spawned_at = 0.0

    def alive(self) -> bool:
        """Whether a shipper of this configuration holds its lock now, or is starting."""
        return shipper_alive(self.directory, self.digest)

    def ensure(self) -> bool:
        """Start a shipper unless one is alive (or starting); False if none could be."""
        try:
            if self._starting():
                return True  # ours, still starting: it takes the lock in a moment
            if self.alive():
                return True
            self._spawn()
        except OSError as exc:
            self.spawn_error = f"cannot start the shipper: {exc}"
            return False
        return True

    def _spawn(self) -> None:
        """Start the shipper in its own session (``posix_spawn``: no fork of this
        process's memory, and no ``Popen`` left to warn that its child outlives it).

        The process spawned forks at once and exits, its child going on as the shipper:
        not a child of ours, so a parent that ends its children when it exits (a Ray
        worker does) cannot take the shipper, and the runs it has yet to ship, along.
        """
        self._reap()
        log = shipper_file(self.directory, self.digest, "log")
        env = {**os.environ, SPEC_VARIABLE: json.dumps(self.spec)}
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 2, str(log), flags, 0o600)]
        # Until it holds its lock, this says a shipper is on its way (to other processes
        # of this configuration and to `rlobs sync`, so neither starts a second one): in
        # our name until the shipper, forked free of us, writes its own.
        with contextlib.suppress(OSError):
            _starting_path(self.directory, self.digest).write_text(
                f"{os.getpid()} {time.time()}")
        try:
            self._pid = os.posix_spawn(
                sys.executable, [sys.executable, "-c", _ENTRY, str(self.directory),
                                 self.digest], env, file_actions=actions, setsid=True)
        except OSError:
            with contextlib.suppress(OSError):
                _starting_path(self.directory, self.digest).unlink()
            raise
        self._spawned_at = time.monotonic()
        self.spawned += 1

    def _starting(self) -> bool:
        """Whether the shipper this process started is still starting up (the process
        we spawned, until it forks itself free; then the one its marker names)."""
        if self._pid is None or time.monotonic() - self._spawned_at > _START_GRACE_S:
            return False
        return not self._reap() or _starting(self.directory, self.digest)

    def wait_detached(self, timeout_s: float) -> None:
        """Wait, bounded, until the process we spawned has forked the shipper free of
        us (a run's end calls this, so that an exit right after it leaves the shipper
        be; usually that happened long before)."""
        deadline = time.monotonic() + timeout_s
        while not self._reap() and time.monotonic() < deadline:
            time.sleep(0.005)

    def _reap(self) -> bool:
        """Collect our shipper if it exited (no zombie is left); True if it did."""
        if self._pid is None:
            return True
        try:
            pid, _ = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid = self._pid
        if pid == 0:
            return False
        self._pid = None
        return True

    def status(self) -> dict[str, Any] | None:
        """The shipper's last status report, if any."""
        data = read_json(shipper_file(self.directory, self.digest, "json"))
        return data if isinstance(data, dict) else None

    def shipped(self, run_ids: Mapping[str, int]) -> bool:
        """Whether every sink has each run at least up to the given log size: settled
        (its delivery record), or read that far with nothing left to send."""
        status = self.status() or {}
        runs = status.get("runs", {})
        for run_id, size in run_ids.items():
            record = deliveries(self.directory, run_id)
            for sink in self.sinks:
                entry = record.get(sink.name)
                if entry and entry.get("size", -1) >= size:
                    continue
                live = runs.get(run_id, {}).get("sinks", {}).get(sink.name)
                if not live or live.get("offset", -1) < size or live.get("pending", 1) > 0 \
                        or live.get("state") == "ending":
                    return False
        return True


def _claim_start(directory: Path, digest: str) -> None:
    """The starting marker names the shipper itself from here on (forked free of the
    process that spawned it, whose name it held until now)."""
    with contextlib.suppress(OSError):
        _starting_path(directory, digest).write_text(f"{os.getpid()} {time.time()}")


def main(argv: list[str] | None = None) -> int:
    """Run the shipper of one directory and configuration until it is idle."""
    args = sys.argv[1:] if argv is None else argv
    directory, digest = Path(args[0]), args[1]
    if argv is None:
        _claim_start(directory, digest)
    fd = _try_lock(_lock_path(directory, digest))
    with contextlib.suppress(OSError):
        _starting_path(directory, digest).unlink()
    if fd is None:
        return 0  # another shipper of this configuration is alive
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    spec = json.loads(os.environ.get(SPEC_VARIABLE, "[]"))
    sinks = build_sinks_from_spec(spec)
    idle_s = env_float(ev.RLOBS_SHIPPER_IDLE_S, 5.0)
    shipper = Shipper(sinks, linger_s=env_float(ev.RLOBS_SHIPPER_LINGER_S, 300.0))
    shipper.start()
    status_path = shipper_file(directory, digest, "json")
    started = time.time()
    idle_since: float | None = None
    frozen = False
    try:
        while True:
            if not frozen and shipper.opened():
                # What opening the sinks built (imported modules, MLflow's store: some
                # 300k objects) lives as long as we do. Out of the collector's sight it
                # is not rescanned by the collections that MLflow's ORM triggers with
                # every batch it stores: a third less CPU per metric value.
                gc.freeze()
                frozen = True
            _scan(shipper, directory, digest)
            shipper.check_writers()
            shipper.settle()
            _report(shipper, status_path, started)
            shipper.forget_settled()
            if not shipper.idle():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_s:
                os.close(fd)  # give the lock up, then look one last time
                _scan(shipper, directory, digest)
                if shipper.idle():
                    break
                fd = _try_lock(_lock_path(directory, digest))
                if fd is None:
                    break  # a new shipper took over: it ships what we leave
                idle_since = None
            time.sleep(0.2)
    finally:
        shipper.stop()
        _report(shipper, status_path, started, exited=True)
    return 0


_sizes: dict[Path, int] = {}
_starts: dict[Path, RunStart] = {}


def _scan(shipper: Shipper, directory: Path, digest: str) -> None:
    """Track new logs of this configuration, and known ones that grew — in the order the
    runs started, so a parent's start is shipped before its children's."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".jsonl")]
    except OSError:
        return
    found: list[tuple[int, Path, RunStart]] = []
    for entry in entries:
        path = Path(entry.path)
        try:
            size = entry.stat().st_size
        except OSError:
            continue
        if _sizes.get(path) == size:
            continue
        start = _starts.get(path) or first_event(path)
        if start is None:
            continue  # not written yet, or not a log
        _starts[path], _sizes[path] = start, size
        if start.shipper == digest and not _settled(directory, start.run_id, size, shipper):
            found.append((start.time_ns, path, start))
    for _, path, start in sorted(found, key=lambda item: item[0]):
        shipper.track(path, start)


def _settled(directory: Path, run_id: str, size: int, shipper: Shipper) -> bool:
    """Whether every sink recorded the run as settled at this size (an old run)."""
    if run_id in shipper.runs:
        return False
    record = deliveries(directory, run_id)
    return bool(record) and all(
        record.get(feed.name, {}).get("size", -1) >= size for feed in shipper.feeds)


def _report(shipper: Shipper, path: Path, started: float, *, exited: bool = False) -> None:
    status = shipper.status()
    times = os.times()
    status.update(pid=os.getpid(), started=started, updated=time.time(), exited=exited,
                  rss_bytes=_rss(), cpu_s=round(times.user + times.system, 3))
    with contextlib.suppress(OSError):
        write_json(path, status)


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


