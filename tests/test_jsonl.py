"""The JSONL sink and reader: the local record of truth."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import pytest

import rlobs
from rlobs import SCHEMA_VERSION, Event, RunEnd, RunFileError, RunStart, Step, event_to_line


def _run(runs_dir: Path, n: int = 50) -> Path:
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub:
        with hub.run("sac-pairs", params={"gamma": 0.99}) as run:
            for t in range(n):
                with run.span("actor.forward", batch_size=1):
                    pass
                run.step(0.5, {"loss": 1.0 / (t + 1)}, done=t == n - 1)
    return runs_dir / f"{run.run_id}.jsonl"


def test_file_starts_with_run_start_ends_with_run_end_and_is_versioned(runs_dir: Path) -> None:
    """One file per run: first line run_start, last run_end, every line versioned."""
    path = _run(runs_dir)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "run_start" and lines[-1]["type"] == "run_end"
    assert {line["v"] for line in lines} == {SCHEMA_VERSION}
    assert sum(line["type"] == "step" for line in lines) == 50
    assert lines[-1]["status"] == "finished"


def test_reader_round_trips_every_event(runs_dir: Path) -> None:
    """The reader rebuilds the same typed events the sink wrote."""
    log = rlobs.read_run(_run(runs_dir))
    assert isinstance(log.start, RunStart) and log.start.params == {"gamma": 0.99}
    assert isinstance(log.end, RunEnd) and log.end.steps == 50
    assert [s.step for s in log.steps] == list(range(50))
    assert len(log.spans) == 50 and log.spans[0].attributes == {"batch_size": 1}
    assert log.torn_tail is None and log.bad_lines == ()


def test_torn_last_line_is_reported_not_fatal(runs_dir: Path) -> None:
    """A half-written last line is reported as torn; every complete line is returned."""
    path = _run(runs_dir)
    complete = path.read_text().splitlines(keepends=True)[:-1]
    path.write_text("".join(complete) + '{"v":1,"type":"step","run_id":"x","st')
    log = rlobs.read_run(path)
    assert log.torn_tail is not None and log.torn_tail.startswith('{"v":1')
    assert log.end is None
    assert len(log.events) == len(complete)


def test_garbage_in_the_middle_is_skipped_and_numbered(runs_dir: Path) -> None:
    """An unreadable complete line is skipped and its number reported."""
    path = _run(runs_dir, 5)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(2, "not json\n")
    path.write_text("".join(lines))
    log = rlobs.read_run(path)
    assert log.bad_lines == (3,)
    assert len(log.steps) == 5


def test_non_finite_values_survive_as_documented_strings(runs_dir: Path) -> None:
    """NaN and ±inf are written as "NaN"/"Infinity"/"-Infinity" and read back as floats."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub, hub.run("nan") as run:
        run.step(math.nan, {"up": math.inf, "down": -math.inf, "ok": 1.0})
    path = runs_dir / f"{run.run_id}.jsonl"
    raw = json.loads(path.read_text().splitlines()[1])  # strict JSON: no NaN tokens
    assert raw["reward"] == "NaN" and raw["metrics"]["up"] == "Infinity"
    (step,) = rlobs.read_run(path).steps
    assert math.isnan(step.reward)
    assert step.metrics == {"up": math.inf, "down": -math.inf, "ok": 1.0}


def test_not_a_run_log_is_a_clear_error(tmp_path: Path) -> None:
    """Reading a file that is not a run log raises RunFileError."""
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(RunFileError, match="not an rlobs run log"):
        rlobs.read_run(other)
    with pytest.raises(RunFileError, match="no such run log"):
        rlobs.read_run(tmp_path / "missing.jsonl")


def test_unknown_fields_from_newer_writers_are_ignored() -> None:
    """A line with extra fields still parses (forward compatibility)."""
    line = json.dumps({"v": 2, "type": "step", "run_id": "r", "step": 0, "reward": 1.0,
                       "cumulative_reward": 1.0, "metrics": {}, "done": False,
                       "truncated": False, "episode": 0, "episode_return": None,
                       "episode_length": None, "time_ns": 1, "new_field": [1, 2]})
    event = rlobs.event_from_line(line)
    assert isinstance(event, Step) and event.reward == 1.0


def test_sync_resends_a_recorded_run_unchanged(runs_dir: Path) -> None:
    """`rlobs.sync` delivers the recorded events as they were, in order."""
    from rlobs.testing import RecordingSink

    log = rlobs.read_run(_run(runs_dir, 20))
    sink = RecordingSink()
    report = rlobs.sync([log.path], [sink])
    assert report.complete
    assert tuple(sink.events) == log.events


def test_sync_of_a_dead_run_ends_it_killed_in_the_log_and_the_sink(runs_dir: Path) -> None:
    """A log with no end whose writer is gone (SIGKILL) is ended `killed`: in the log
    itself, then in the sink, with the counts of the last step on disk."""
    from rlobs.testing import RecordingSink

    path = _run(runs_dir, 10)
    lines = path.read_text().splitlines(keepends=True)[:-1]
    path.write_text("".join(lines) + '{"type":"step","run_id":"torn')  # a torn last line
    sink = RecordingSink()
    assert rlobs.sync([path], [sink]).complete
    end = rlobs.read_run(path).end
    assert end is not None and end.status is rlobs.RunStatus.KILLED and end.steps == 10
    assert rlobs.read_run(path).torn_tail is None
    assert sink.of_type(RunEnd) == [end]


@pytest.mark.parametrize("metrics", [{}, {"loss": 0.25, "n": 3}, {'quote"key': 1e300},
                                     {"ünïcode/κ": -2.5e-12}, {"big": 12345678901234567890}])
def test_step_lines_are_exactly_the_event_as_json(metrics: dict[str, float]) -> None:
    """The step fast path writes the same JSON object the general encoder would."""
    for end in (None, 7.25):
        step = Step("run-1", 41, -0.5, 1e17, metrics, end is not None, False, 2, end,
                    None if end is None else 9, 1_795_416_373_726_018_068)
        line = rlobs.event_to_line(step)
        assert line.endswith("\n") and line.count("\n") == 1
        assert json.loads(line) == json.loads(json.dumps(rlobs.event_to_dict(step)))
        assert rlobs.event_from_line(line) == step


def _cut_and_append(path: Path, line: bytes, stop: threading.Event) -> None:
    """What a sealer does, over and over: a torn tail appears, is cut, a line follows."""
    with path.open("r+b") as handle:
        while not stop.is_set():
            keep = handle.seek(0, os.SEEK_END)
            handle.write(b'{"type":"step","run_id":"torn')
            handle.flush()
            handle.truncate(keep)
            handle.seek(keep)
            handle.write(line)
            handle.flush()


@pytest.mark.parametrize("reader", ["cursor", "tail"])
def test_a_reader_never_splices_a_new_line_onto_a_cut_torn_tail(tmp_path: Path,
                                                                reader: str) -> None:
    """Sealing cuts a torn last line and appends the end; a reader that had seen the torn
    bytes must not glue them to the new line (the end would be lost as a bad line)."""
    from rlobs._follow import Cursor
    from rlobs._tail import follow

    path = tmp_path / "r.jsonl"
    step = event_to_line(Step("r", 0, 1.0, 1.0, {"loss": 0.5}, False, False, 0, None,
                              None, 2)).encode()
    path.write_bytes(step)
    stop = threading.Event()
    sealer = threading.Thread(target=_cut_and_append, args=(path, step, stop))
    sealer.start()
    if reader == "cursor":
        cursor = Cursor(path)
        read = cursor.read
    else:
        events = follow(path, poll_s=0)

        def read() -> list[Event]:
            event = next(events)
            return [] if event is None else [event]
    seen = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen += len(read())
    finally:
        stop.set()
        sealer.join()
    while batch := read():
        seen += len(batch)
    # The file is now whole steps only; each must have reached the reader exactly once.
    assert seen == path.read_bytes().count(b"\n") > 100


def test_read_run_never_takes_a_splice_for_a_bad_line(tmp_path: Path) -> None:
    """Reading a whole log while it is sealed over and over: each read is the log as it
    was at one moment — whole lines and perhaps a torn tail, never a glued bad line."""
    path = tmp_path / "r.jsonl"
    start = event_to_line(RunStart("r", "n", {}, {}, None, 1)).encode()
    step = event_to_line(Step("r", 0, 1.0, 1.0, {"loss": 0.5}, False, False, 0, None,
                              None, 2)).encode()
    path.write_bytes(start + step)
    stop = threading.Event()
    sealer = threading.Thread(target=_cut_and_append, args=(path, step, stop))
    sealer.start()
    reads = bad = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            log = rlobs.read_run(path)
            reads += 1
            bad += len(log.bad_lines)
    finally:
        stop.set()
        sealer.join()
    assert reads >= 10 and bad == 0
    assert len(rlobs.read_run(path).steps) == path.read_bytes().count(b"\n") - 1
