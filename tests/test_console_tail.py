"""The console sink (live and plain views) and ``rlobs tail`` following a live file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlobs import Hub, RunEnd, RunStart, RunStatus, Step, event_to_line
from rlobs._tail import follow, watch
from rlobs.testing import RecordingSink
from sinks.console import ConsoleSink

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys, time, rlobs
with rlobs.Hub(["jsonl"], heartbeat_s=0, handle_signals=False) as hub:
    with hub.run("writer", run_id="tailed") as run:
        for i in range(200):
            run.step(1.0, done=(i % 20 == 19))
            if i % 20 == 0:
                time.sleep(0.02)
"""


def _run_on(sink: ConsoleSink, steps: int = 60) -> None:
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub, \
            hub.run("cartpole") as run:
        for i in range(steps):
            run.step(0.5, done=(i % 10 == 9))


def test_plain_mode_prints_progress_lines_and_a_summary() -> None:
    """Off a terminal: a start line, periodic progress lines, and the end table."""
    out = io.StringIO()
    _run_on(ConsoleSink(out, terminal=False, interval_s=0.0))
    text = out.getvalue()
    assert "run cartpole (" in text and "started" in text
    assert "steps 60" in text and "episodes 6" in text and "return(avg 6) 5" in text
    assert "finished" in text and "mean return (last 6)" in text
    assert "\x1b[" not in text  # no escape codes in a log file


def test_live_mode_renders_on_a_terminal() -> None:
    """On a terminal the sink draws a live display and still prints the summary."""
    out = io.StringIO()
    _run_on(ConsoleSink(out, terminal=True, refresh_s=0.0))
    text = out.getvalue()
    assert "\x1b[" in text and "finished" in text and "total reward" in text


def test_missed_steps_are_counted() -> None:
    """Gaps in step numbers (steps this sink lost) show on the line."""
    sink = ConsoleSink(io.StringIO(), terminal=False)
    sink.on_run_start(RunStart("r", "gappy", {}, {}, None, 0))
    for index in (0, 1, 5):
        sink.on_step(Step("r", index, 1.0, 0.0, {}, False, False, 0, None, None, index))
    assert "missed 3" in sink.boards["r"].line().plain


def test_vector_env_episodes_are_counted() -> None:
    """Per-env episode returns in a step's metrics count as episodes."""
    sink = ConsoleSink(io.StringIO(), terminal=False)
    sink.on_run_start(RunStart("r", "vec", {}, {}, None, 0))
    metrics = {"env/0/episode_return": 10.0, "env/3/episode_return": 20.0}
    sink.on_step(Step("r", 0, 1.0, 1.0, metrics, False, False, 0, None, None, 1))
    board = sink.boards["r"]
    assert (board.episodes, list(board.returns)) == (2, [10.0, 20.0])


def test_follow_holds_back_a_line_until_its_newline(tmp_path: Path) -> None:
    """A line still being written is not parsed until it is complete."""
    path = tmp_path / "r.jsonl"
    start = event_to_line(RunStart("r", "n", {}, {}, None, 1))
    step = event_to_line(Step("r", 0, 1.0, 1.0, {}, False, False, 0, None, None, 2))
    path.write_text(start + step[:20])
    events = follow(path, timeout_s=5, poll_s=0.001)
    assert isinstance(next(events), RunStart)
    assert next(events) is None  # idle: the half line is held back
    with path.open("a") as handle:
        handle.write(step[20:])
    assert isinstance(next(events), Step)


def test_watch_follows_another_process_to_the_end(runs_dir: Path) -> None:
    """``watch`` feeds every event of a file another process is writing, then stops."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    sink = RecordingSink()
    try:
        end = watch(runs_dir / "tailed.jsonl", sink, timeout_s=60)
    finally:
        writer.wait(timeout=60)
    assert end.status is RunStatus.FINISHED
    assert [s.step for s in sink.of_type(Step)] == list(range(200))
    assert sink.closed and len(sink.of_type(RunEnd)) == 1


def test_tail_cli_shows_the_summary_and_exits_0(runs_dir: Path) -> None:
    """``rlobs tail`` exits 0 with the summary once a finished run's end arrives (the
    directory exists, as a path in a missing one is an error: the file is waited for)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs_dir.mkdir(parents=True, exist_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER], cwd=ROOT, env=env)
    try:
        tail = subprocess.run([sys.executable, "-m", "rlobs", "tail",
                               str(runs_dir / "tailed.jsonl"), "--timeout", "60"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    finally:
        writer.wait(timeout=60)
    assert tail.returncode == 0, tail.stderr
    assert "run writer ended" in tail.stdout and "200" in tail.stdout


def test_tail_gives_up_at_the_timeout(tmp_path: Path) -> None:
    """A run that never ends makes ``rlobs tail --timeout`` exit 1."""
    path = tmp_path / "dead.jsonl"
    path.write_text(event_to_line(RunStart("r", "dead", {}, {}, None, 1)))
    from rlobs._cli import main

    assert main(["tail", str(path), "--timeout", "0.3"]) == 1


def test_bad_interval_falls_back() -> None:
    """An unreadable ``RLOBS_CONSOLE_INTERVAL_S`` warns and keeps the default."""
    with pytest.warns(Warning):
        sink = ConsoleSink.from_env({"RLOBS_CONSOLE_INTERVAL_S": "soon"})
    assert sink.interval_s == 5.0


def test_watch_shows_other_sinks_errors() -> None:
    """Given the hub, each line names the sinks that dropped events or failed."""
    from rlobs.testing import FailingSink

    out = io.StringIO()
    console = ConsoleSink(out, terminal=False, interval_s=0.0)
    with Hub([console, FailingSink("flaky", hooks=["on_step"])], heartbeat_s=0,
             handle_signals=False, provenance=False) as hub:
        console.watch(hub)
        with hub.run("watched") as run:
            for _ in range(5):
                run.step(1.0)
            hub.flush()
            run.step(1.0)
    assert "flaky: dropped 0 errors" in out.getvalue()


SLOW_WRITER = """
import sys, time, rlobs
with rlobs.Hub(["jsonl"], heartbeat_s=0, handle_signals=False) as hub:
    with hub.run("slow", run_id="slow") as run:
        for i in range(12):
            run.step(1.0, done=(i % 4 == 3))
            time.sleep(0.25)
"""


@pytest.mark.slow
def test_tail_of_a_directory_follows_its_latest_run_and_timeout_is_since_the_last_event(
        runs_dir: Path) -> None:
    """`rlobs tail DIR --timeout 1.5` follows a run that lasts ~3 s with an event every
    0.25 s to its end: the timeout counts from the last event, not from the start."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    older = runs_dir / "older.jsonl"
    runs_dir.mkdir(parents=True, exist_ok=True)
    older.write_text(event_to_line(RunStart("older", "older", {}, {}, None, 1)))
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER], cwd=ROOT, env=env)
    try:
        while not (runs_dir / "slow.jsonl").exists():
            assert writer.poll() is None
        tail = subprocess.run([sys.executable, "-m", "rlobs", "tail", str(runs_dir),
                               "--timeout", "1.5"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        writer.wait(timeout=60)
    assert tail.returncode == 0, tail.stdout + tail.stderr
    assert "run slow ended" in tail.stdout and "episodes" in tail.stdout
    assert "older" not in tail.stdout


def test_tail_of_a_wrong_path_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path in a missing directory, or not a .jsonl, exits 2 with one line; a
    .jsonl in an existing directory is waited for, saying so."""
    from rlobs._cli import main

    for wrong in (tmp_path / "no" / "run.jsonl", tmp_path / "notes.txt"):
        assert main(["tail", str(wrong), "--timeout", "0.2"]) == 2
        err = capsys.readouterr().err
        assert "no such run log" in err and "Traceback" not in err
    assert main(["tail", str(tmp_path / "later.jsonl"), "--timeout", "0.2"]) == 1
    out = capsys.readouterr()
    assert "waiting for" in out.err and "did not appear" in out.out
    assert main(["tail", str(tmp_path), "--timeout", "0.2"]) == 1
    assert "waiting for a run log in" in capsys.readouterr().err
    assert main(["tail", str(tmp_path / "later.jsonl"), "--timeout", "-1"]) == 2
