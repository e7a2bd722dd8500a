"""``rlobs sync``: ship run logs to sinks once — the live shipper's path, in the foreground.

After an outage, a SIGKILL on a host whose shipper died with it, or to send old runs to
a new sink: every run is shipped through the same :class:`~rlobs._ship.Shipper` the
shipper process runs, so a sink that keeps state (MLflow finds its run by the
``rlobs.run_id`` tag) gets only what it lacks. A log whose writer died is ended
``killed`` first. ``rlobs replay`` is the same command.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import environment_variables as ev
from ._daemon import digest_of, shipper_alive, spec_of, take_shipper_lock
from ._events import RunStart
from ._exceptions import RlobsError
from ._follow import first_event, size_of, writer_alive
from ._records import deliveries, read_json, shipper_file
from ._registry import build_sinks, parse_sink_names, selected_names
from ._ship import Shipper
from ._sink import Sink

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SinkOutcome:
    """How one run went to one sink."""

    sink: str
    state: str  # complete | incomplete | live | skipped (already complete)
    delivered: int = 0
    lost: int = 0
    missing: str | None = None


@dataclass
class RunOutcome:
    """How one run log was shipped."""

    path: Path
    run_id: str
    sinks: list[SinkOutcome] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every sink holds the whole run."""
        return all(s.state in ("complete", "skipped") for s in self.sinks)


@dataclass
class SyncReport:
    """What :func:`sync` did, per run; ``complete`` if every sink holds every run."""

    runs: list[RunOutcome] = field(default_factory=list)
    not_logs: list[Path] = field(default_factory=list)

    no_sinks: bool = False
    """No sink was selected, and some run was not being shipped by a live shipper."""

    @property
    def complete(self) -> bool:
        """Whether every run is complete in every sink (and every path was a run log)."""
        return not self.not_logs and not self.no_sinks and all(
            run.complete for run in self.runs)


def log_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run logs among ``paths`` (a directory stands for its ``*.jsonl`` files).

    Raises:
        RlobsError: a path does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(path.glob("*.jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise RlobsError(f"no such run log or directory: {path}")
    return files


def sync(paths: Iterable[str | os.PathLike[str]], sinks: Iterable[str | Sink] | None = None,
         *, env: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
         force: bool = False) -> SyncReport:
    """Ship run logs to sinks, idempotently; wait until each sink has each run.

    A run its live shipper is shipping is waited for (at most ``timeout_s``) rather than
    shipped twice at once; a run its delivery record says is complete is skipped.

    Args:
        paths: run logs, or directories of them.
        sinks: sink names or instances; default the environment's selection.
        env: environment to read sinks' variables from (default ``os.environ``).
        timeout_s: how long a sink may take to confirm a run before it is given up.
        force: ship every run here, whatever its records and its shipper say.

    Raises:
        RlobsError: a path does not exist.
    """
    env = dict(os.environ if env is None else env)
    chosen = [s for s in build_sinks(selected_names(env) if sinks is None else sinks, env)
              if not s.run_log]
    report = SyncReport()
    ours = digest_of(spec_of(s for s in chosen if s.shipper and s.ship_env() is not None))
    shipper = Shipper(chosen, linger_s=timeout_s, check_s=0.0)
    todo: dict[str, RunOutcome] = {}
    live: dict[str, tuple[RunOutcome, RunStart]] = {}
    locks: dict[tuple[Path, str], int | None] = {}
    for path in log_files(paths):
        start = first_event(path)
        if start is None:
            report.not_logs.append(path)
            continue
        outcome = RunOutcome(path, start.run_id)
        report.runs.append(outcome)
        # Its own shipper's configuration (or no sink chosen: then sync only waits for it
        # and reports): wait for a live shipper rather than ship the run twice at once.
        theirs = start.shipper is not None and (not chosen or start.shipper == ours)
        if not force and theirs and not _shipper_role(locks, path.parent, start.shipper or ""):
            live[start.run_id] = (outcome, start)
        elif not chosen:
            if not _recorded(outcome, None):
                report.no_sinks = True
        elif force or not _recorded(outcome, chosen):
            todo[start.run_id] = outcome
            shipper.track(path, start)
    try:
        if todo:
            shipper.start()
            try:
                _ship_until_settled(shipper, todo, timeout_s)
            finally:
                shipper.stop()
    finally:
        for fd in locks.values():
            if fd is not None:
                os.close(fd)
    for run_id, outcome in todo.items():
        outcome.sinks = _outcomes(shipper, run_id)
    for outcome, start in live.values():
        _await_shipper(outcome, start, timeout_s)
    return report


def _shipper_role(locks: dict[tuple[Path, str], int | None], directory: Path,
                  digest: str) -> bool:
    """Take the shipper's part for this configuration while syncing (so a shipper that is
    starting right now does not ship the same runs at once); False if one is live."""
    key = (directory, digest)
    if key not in locks:
        locks[key] = take_shipper_lock(directory, digest)
    return locks[key] is not None


def _recorded(outcome: RunOutcome, sinks: list[Sink] | None) -> bool:
    """Fill ``outcome`` from the delivery record if every sink (``None``: every sink the
    record names) holds the whole run."""
    done = deliveries(outcome.path.parent, outcome.run_id)
    size = size_of(outcome.path)
    names = list(done) if sinks is None else [s.name for s in sinks]
    if not names or not all(done.get(n, {}).get("state") == "complete"
                            and done[n].get("size", -1) >= size for n in names):
        return False
    outcome.sinks = [SinkOutcome(n, "skipped", done[n].get("delivered", 0)) for n in names]
    return True


def _await_shipper(outcome: RunOutcome, start: RunStart, timeout_s: float) -> None:
    """Wait until the run's live shipper settled it in each of its sinks (its records)."""
    directory = outcome.path.parent
    deadline = time.monotonic() + timeout_s
    while True:
        status = read_json(shipper_file(directory, start.shipper or "", "json")) or {}
        names = list(status.get("sinks", {})) or list(deliveries(directory, outcome.run_id))
        done = deliveries(directory, outcome.run_id)
        size = size_of(outcome.path)
        settled = bool(names) and all(
            done.get(n, {}).get("size", -1) >= size and not writer_alive(outcome.path)
            for n in names)
        if settled or time.monotonic() >= deadline \
                or not shipper_alive(directory, start.shipper or ""):
            break
        time.sleep(0.1)
    outcome.sinks = [SinkOutcome(n, str(done.get(n, {}).get("state", "live")),
                                 int(done.get(n, {}).get("delivered", 0)),
                                 int(done.get(n, {}).get("lost", 0)),
                                 done.get(n, {}).get("missing")
                                 or (None if n in done else "its shipper is still on it"))
                     for n in names]


def _ship_until_settled(shipper: Shipper, todo: Mapping[str, RunOutcome],
                        timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s + 5.0
    shipper.check_writers(now=True)
    while time.monotonic() < deadline:
        shipper.settle()
        if all(_caught_up(shipper, run_id, outcome.path) for run_id, outcome in todo.items()):
            return
        time.sleep(0.05)


def _caught_up(shipper: Shipper, run_id: str, path: Path) -> bool:
    """Settled in every sink, or still being written and shipped as far as it goes."""
    for feed in shipper.feeds:
        track = next((t for t in feed.tracks() if t.run_id == run_id), None)
        if track is None or track.settled:
            continue
        if feed.available is False:
            return False
        if not (writer_alive(path) and track.fed >= size_of(path)):
            return False
    return True


def _outcomes(shipper: Shipper, run_id: str) -> list[SinkOutcome]:
    out = []
    run = shipper.runs.get(run_id)
    for feed in shipper.feeds:
        track = next((t for t in feed.tracks() if t.run_id == run_id), None)
        if track is None:
            continue
        state = track.state if track.settled else "live" if run and run.writer == "alive" \
            else "incomplete"
        missing = track.missing
        if not track.settled and state == "incomplete":
            missing = f"sink unavailable: {feed.detail}" if feed.available is False \
                else "the sink did not confirm the run in time"
        out.append(SinkOutcome(feed.name, state, track.delivered, track.lost, missing))
    return out


# ---------------------------------------------------------------------- the commands

def _cmd_sync(args: argparse.Namespace) -> int:
    from ._cli import console

    paths = args.paths or [os.environ.get(ev.RLOBS_JSONL_DIR) or "rlobs-runs"]
    names: Sequence[str] | None = parse_sink_names(args.sinks) if args.sinks else None
    if names is not None and "jsonl" in names:
        console().print("[yellow]note:[/yellow] skipping jsonl: the log is the source")
        names = [n for n in names if n != "jsonl"]
    report = sync(paths, names, timeout_s=args.timeout, force=args.force)
    for path in report.not_logs:
        console().print(f"[red]not a run log:[/red] {path}")
    for run in report.runs:
        for sink in run.sinks:
            colour = "green" if sink.state in ("complete", "skipped") else "yellow"
            extra = f" — missing: {sink.missing}" if sink.missing else ""
            lost = f", {sink.lost} lost" if sink.lost else ""
            console().print(f"{run.run_id} → {sink.sink}: [{colour}]{sink.state}[/{colour}] "
                            f"({sink.delivered} events{lost}){extra}")
    if not report.runs:
        console().print("no run logs found")
    if report.no_sinks:
        console().print("[red]no sink selected[/red]: set RLOBS_SINKS (or a sink's own "
                        "variable, e.g. MLFLOW_TRACKING_URI), or pass --sinks")
    total = len(report.runs)
    whole = sum(run.complete for run in report.runs)
    console().print(f"{whole} of {total} runs complete in every sink")
    return 0 if report.complete else 1


def _add_arguments(parser: argparse.ArgumentParser, *, paths_required: bool) -> None:
    parser.add_argument("paths", nargs="+" if paths_required else "*",
                        help="run .jsonl files or directories of them "
                        "(default: RLOBS_JSONL_DIR)")
    parser.add_argument("--sinks", help="comma-separated sink names (default: the "
                        "environment's selection)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="how long a sink may take to confirm a run (default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="ship runs even if their delivery record says complete")
    parser.set_defaults(func=_cmd_sync)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs sync [DIR|FILE...]`` and its alias ``rlobs replay FILE...``."""
    _add_arguments(sub.add_parser(
        "sync", help="ship run logs to sinks, exactly once (exit 1 unless every run is "
        "complete in every sink)"), paths_required=False)
    _add_arguments(sub.add_parser("replay", help="the same as sync"), paths_required=True)
