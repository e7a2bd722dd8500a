"""Shipping run logs to sinks: the path the shipper process runs live and ``rlobs sync``
runs once — one code path, so the live path has sync's exactly-once delivery.

Each sink gets a :class:`Feed`: its own thread, its own offset in every log it ships, the
same :class:`~rlobs._worker.Deliverer` failure boundary as in-process sinks. A feed never
drops: the log on disk is its buffer, so a slow or unreachable back end only makes it lag.
A run is *complete* for a sink once the sink got the run's end and reports nothing
pending (:meth:`rlobs.Sink.delivery`); a sink still owing data ``linger_s`` after the end
is told to give up (:meth:`rlobs.Sink.abandon`) and the run is recorded *incomplete* with
what is missing, for ``rlobs sync`` to finish later.

:class:`Shipper` owns the feeds, notices writers that died (and seals their logs with a
``killed`` end, see :mod:`rlobs._follow`), records each run's delivery and reports status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._events import Event, RunEnd, RunStart
from ._follow import Cursor, first_event, seal, size_of, writer_alive
from ._log import logger
from ._records import record_delivery
from ._sink import Delivery, Sink
from ._worker import Deliverer, describe

_READ_BYTES = 4 << 20


@dataclass(eq=False)
class Track:
    """One run as one feed ships it."""

    run_id: str
    path: Path
    cursor: Cursor
    delivered: int = 0
    state: str = "shipping"  # shipping → ending (end delivered) → complete | incomplete
    ended_at: float | None = None
    pending: int = 0
    lost: int = 0
    missing: str | None = None
    settled_size: int = 0  # the log's size when it settled; it grows only if resumed
    fed: int = 0  # the log's offset up to which the sink was handed every event

    @property
    def settled(self) -> bool:
        """Whether the sink holds the whole run, or gave up on part of it."""
        return self.state in ("complete", "incomplete")


class Feed:
    """One sink fed from run logs by its own thread (module docstring)."""

    def __init__(self, sink: Sink, *, poll_s: float = 0.1) -> None:
        self.sink = sink
        self.name = sink.name
        self.out = Deliverer(sink, self._path_of)
        self.available: bool | None = None  # None while opening
        self.detail: str | None = None
        self.delivered = 0
        self.lost = 0  # values the sink lost, over every settled run
        self._poll_s = poll_s
        self._tracks: dict[str, Track] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._main, name=f"rlobs-ship-{self.name}",
                                        daemon=True)

    def start(self) -> None:
        """Open the sink and start shipping (on the feed's thread)."""
        self._thread.start()

    def track(self, run_id: str, path: Path) -> None:
        """Ship this log (again, if it grew after it was settled)."""
        with self._lock:
            track = self._tracks.get(run_id)
            if track is None:
                self._tracks[run_id] = Track(run_id, path, Cursor(path))
            elif track.settled and size_of(path) > track.settled_size:
                track.state, track.ended_at = "shipping", None
        self._wake.set()

    def _path_of(self, run_id: str) -> Path | None:
        track = self._tracks.get(run_id)
        return None if track is None else track.path

    def tracks(self) -> list[Track]:
        """Every run this feed ships or shipped."""
        with self._lock:
            return list(self._tracks.values())

    def forget(self, run_id: str) -> None:
        """Stop tracking a settled run (its record is on disk)."""
        with self._lock:
            self._tracks.pop(run_id, None)

    def stop(self, timeout_s: float) -> None:
        """Stop reading, then close the sink (bounded: a hung sink is abandoned)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self.available:
            self.out.call("close", self.sink.close)

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        try:
            self.sink.open()
        except Exception as exc:
            self.available, self.detail = False, describe(exc)
            logger.warning("sink unavailable in the shipper", sink=self.name,
                           reason=self.detail)
            return
        self.available = True
        while not self._stop:
            worked = False
            for track in self.tracks():
                if not track.settled:
                    worked |= self._ship(track)
            if not worked:
                self._wake.wait(self._poll_s)
                self._wake.clear()

    def _ship(self, track: Track) -> bool:
        events = track.cursor.read(_READ_BYTES)
        if not events:
            return False
        for event in events:
            self._one(track, event)
        self.out.call("flush", self.sink.flush)
        # Only now: the cursor moved on when the chunk was read, and a hook may take its
        # time (an OTel sink waiting for its collector) before the run's end is handed on.
        track.fed = track.cursor.offset
        return True

    def _one(self, track: Track, event: Event) -> None:
        kind = type(event)
        if kind is RunStart:
            with self._lock:
                track.state, track.ended_at = "shipping", None
        if self.out.one(event):
            track.delivered += 1
            self.delivered += 1
        if kind is RunEnd:
            with self._lock:
                track.state, track.ended_at = "ending", time.monotonic()

    # ------------------------------------------------------------------ settling

    def settle(self, linger_s: float, log_ended: Callable[[str], float | None]
               ) -> list[Track]:
        """Settle runs: complete once the sink got the end and owes nothing; given up
        (incomplete) when the sink still owes data, or has not read the whole log,
        ``linger_s`` after the log ended (``log_ended(run_id)``: when, or ``None``).

        Returns the tracks that settled now (their records are the caller's to write).
        Runs on the shipper's main thread: a sink blocked in a hook does not stop it.
        """
        settled = []
        now = time.monotonic()
        for track in self.tracks():
            if track.settled:
                continue
            ended = log_ended(track.run_id)
            owed = self.out.call("delivery", self.sink.delivery, track.run_id) or Delivery()
            track.pending, track.lost = owed.pending, owed.lost
            if track.state == "ending" and owed.pending <= 0:
                track.missing = owed.detail if owed.lost else None
                track.state = "complete" if not owed.lost else "incomplete"
                track.settled_size = size_of(track.path)
                settled.append(track)
                continue
            if ended is None or now - ended < linger_s:
                continue
            self._abandon(track, linger_s, owed)
            settled.append(track)
        return settled

    def _abandon(self, track: Track, linger_s: float, owed: Delivery) -> None:
        unread = _lines_after(track.path, track.cursor.offset)
        parts = []
        if unread:
            parts.append(f"{unread} events not read")
        if owed.pending:
            parts.append(f"{owed.pending} values not delivered")
        reason = (f"{', '.join(parts) or 'nothing confirmed'} {linger_s:g}s after the run "
                  "ended" + (f" ({owed.detail})" if owed.detail else "")
                  + (f" ({self.sink.detail()})" if self.available and not owed.detail
                     and self._detail_ok() else ""))
        self.out.call("abandon", self.sink.abandon, track.run_id, reason)
        with self._lock:
            track.missing, track.state = reason, "incomplete"
            track.lost = owed.lost + owed.pending + unread
            track.settled_size = size_of(track.path)

    def _detail_ok(self) -> bool:
        try:
            return bool(self.sink.detail())
        except Exception:
            return False

    def give_up(self, track: Track, reason: str) -> None:
        """Settle a run the sink cannot take at all (it is unavailable)."""
        track.missing, track.state = reason, "incomplete"
        track.lost = _lines_after(track.path, track.cursor.offset)
        track.settled_size = size_of(track.path)


def _lines_after(path: Path, offset: int) -> int:
    """Complete lines of a log after ``offset`` (events a sink never read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20),
                                                               b""))
    except OSError:
        return 0


@dataclass(eq=False)
class _Run:
    run_id: str
    path: Path
    start: RunStart
    writer: str = "alive"  # alive | ended | died
    checked: float = field(default=0.0)
    ended_at: float | None = None  # when the writer was found gone (monotonic)


class Shipper:
    """Ships run logs to sinks through one :class:`Feed` each (module docstring).

    Args:
        sinks: the sinks to ship to (opened by their feeds).
        linger_s: how long after a run's end a sink may still owe data.
        check_s: seconds between checks that a live run's writer is still alive.
    """

    def __init__(self, sinks: list[Sink], *, linger_s: float = 300.0,
                 check_s: float = 1.0) -> None:
        self.feeds = [Feed(sink) for sink in sinks]
        self.linger_s = linger_s
        self.check_s = check_s
        self.runs: dict[str, _Run] = {}
        self.sealed = 0

    def start(self) -> None:
        """Start every feed."""
        for feed in self.feeds:
            feed.start()

    def track(self, path: Path, start: RunStart | None = None) -> bool:
        """Ship a run log; False if it is not one (yet: no complete start line)."""
        start = start or first_event(path)
        if start is None:
            return False
        run = self.runs.get(start.run_id)
        if run is None:
            self.runs[start.run_id] = _Run(start.run_id, path, start)
        elif run.writer != "alive" and writer_alive(path):
            run.writer, run.ended_at = "alive", None  # resumed
        for feed in self.feeds:
            feed.track(start.run_id, path)
        return True

    def check_writers(self, *, now: bool = False) -> None:
        """Seal the logs of runs whose writer died without writing their end."""
        moment = time.monotonic()
        for run in list(self.runs.values()):
            if run.writer != "alive" or (not now and moment - run.checked < self.check_s):
                continue
            run.checked = moment
            if not run.path.exists():  # deleted: nothing left to ship, no reason to wait
                run.writer, run.ended_at = "gone", moment - self.linger_s
                continue
            if writer_alive(run.path):
                continue
            pid = run.start.tags.get("rlobs.pid", "?") if run.start.tags else "?"
            end = seal(run.path, run.start, f"the process writing the run (pid {pid}) "
                       "died without ending it; ended by the shipper")
            if end is not None:
                self.sealed += 1
                logger.warning("run writer died; run ended killed", run_id=run.run_id,
                               steps=end.steps)
                run.writer, run.ended_at = "died", time.monotonic()
            elif not writer_alive(run.path):
                run.writer, run.ended_at = "ended", time.monotonic()
            for feed in self.feeds:
                feed.track(run.run_id, run.path)

    def settle(self) -> None:
        """Record the runs that became complete or incomplete for a sink."""
        for feed in self.feeds:
            done = feed.settle(self.linger_s, self._log_ended)
            if feed.available is False:
                for track in feed.tracks():
                    run = self.runs.get(track.run_id)
                    if not track.settled and run is not None and run.writer != "alive":
                        feed.give_up(track, f"sink unavailable: {feed.detail}")
                        done.append(track)
            for track in done:
                feed.lost += track.lost
                self._record(feed, track)

    def _log_ended(self, run_id: str) -> float | None:
        run = self.runs.get(run_id)
        return None if run is None else run.ended_at

    def _record(self, feed: Feed, track: Track) -> None:
        entry: dict[str, Any] = {
            "state": track.state, "size": track.settled_size, "delivered": track.delivered,
            "lost": track.lost, "missing": track.missing, "updated": time.time()}
        try:
            record_delivery(track.path.parent, track.run_id, feed.name, entry)
        except OSError as exc:
            logger.warning("cannot write delivery record", run_id=track.run_id,
                           error=str(exc))

    def opened(self) -> bool:
        """Whether every feed has opened its sink (or found it unavailable)."""
        return all(feed.available is not None for feed in self.feeds)

    def idle(self) -> bool:
        """Whether every run is settled for every sink and no writer is alive."""
        if any(run.writer == "alive" for run in self.runs.values()):
            return False
        return all(t.settled for feed in self.feeds for t in feed.tracks())

    def forget_settled(self) -> None:
        """Drop runs every sink settled and whose writer is gone (bounded memory)."""
        for run_id, run in list(self.runs.items()):
            if run.writer == "alive":
                continue
            tracks = [t for feed in self.feeds for t in feed.tracks() if t.run_id == run_id]
            if tracks and all(t.settled and t.settled_size >= size_of(run.path)
                              for t in tracks):
                for feed in self.feeds:
                    feed.forget(run_id)
                del self.runs[run_id]

    def status(self) -> dict[str, Any]:
        """What every sink has shipped, and still has to, per run."""
        runs: dict[str, Any] = {}
        for feed in self.feeds:
            for track in feed.tracks():
                size = size_of(track.path)
                entry = runs.setdefault(track.run_id, {"path": str(track.path), "sinks": {}})
                run = self.runs.get(track.run_id)
                entry["writer"] = run.writer if run else "ended"
                entry["sinks"][feed.name] = {
                    "state": track.state, "delivered": track.delivered,
                    "offset": track.fed,
                    "unread_bytes": max(0, size - track.fed),
                    "pending": track.pending, "lost": track.lost, "missing": track.missing}
        sinks = {feed.name: {
            "available": feed.available, "detail": self._detail(feed),
            "delivered": feed.delivered, "lost": feed.lost, "errors": feed.out.errors,
            "last_error": feed.out.last_error} for feed in self.feeds}
        return {"sinks": sinks, "runs": runs}

    @staticmethod
    def _detail(feed: Feed) -> str | None:
        if feed.available is not True:
            return feed.detail or "opening"
        try:
            return feed.sink.detail()
        except Exception as exc:
            return f"detail() failed: {describe(exc)}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every feed and close its sink (bounded)."""
        for feed in self.feeds:
            feed.stop(timeout_s)
