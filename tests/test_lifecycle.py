"""Guaranteed close: the right status on every exit path, bounded, idempotent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rlobs
from rlobs import RunEnd, RunStatus
from rlobs.testing import RecordingSink

CHILD = Path(__file__).with_name("child_run.py")


def _spawn(mode: str, runs_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "RLOBS_JSONL_DIR": str(runs_dir)}
    env.pop("RLOBS_HANDLE_SIGNALS", None)
    proc = subprocess.Popen([sys.executable, str(CHILD), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), proc.stderr.read() if proc.stderr else line
    return proc, line.split()[1]


def _finish(proc: subprocess.Popen[str]) -> int:
    try:
        proc.communicate(timeout=30)  # also closes the pipes
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a child behind for the next test to trip over
        proc.communicate()
        raise
    return proc.returncode


def _log(runs_dir: Path, run_id: str) -> rlobs.RunLog:
    return rlobs.read_run(runs_dir / f"{run_id}.jsonl")


def test_sigterm_ends_the_run_killed(runs_dir: Path) -> None:
    """SIGTERM mid-run: the JSONL ends with `killed`, and the exit status is 143."""
    proc, run_id = _spawn("loop", runs_dir)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == 143
    end = _log(runs_dir, run_id).end
    assert end is not None and end.status is RunStatus.KILLED
    assert "SIGTERM" in (end.error or "")


def test_sigint_ends_the_run_killed(runs_dir: Path) -> None:
    """SIGINT (KeyboardInterrupt) mid-run: the JSONL ends with `killed`."""
    proc, run_id = _spawn("loop", runs_dir)
    proc.send_signal(signal.SIGINT)
    _finish(proc)
    end = _log(runs_dir, run_id).end
    assert end is not None and end.status is RunStatus.KILLED
    assert end.error == "KeyboardInterrupt"


def test_interpreter_exit_with_an_open_run_ends_it_killed(runs_dir: Path) -> None:
    """A run left open when the interpreter exits is ended `killed` by the exit hook."""
    proc, run_id = _spawn("exit-open", runs_dir)
    assert _finish(proc) == 0
    end = _log(runs_dir, run_id).end
    assert end is not None and end.status is RunStatus.KILLED
    assert "interpreter exited" in (end.error or "")


def test_sigkill_leaves_every_complete_line_readable(runs_dir: Path) -> None:
    """After SIGKILL the reader returns every complete line and no end."""
    proc, run_id = _spawn("loop", runs_dir)
    path = runs_dir / f"{run_id}.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        not path.exists() or path.read_text().count("\n") < 200
    ):
        time.sleep(0.02)
    seen = path.read_text().count("\n")
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    log = _log(runs_dir, run_id)
    assert log.end is None
    steps = log.steps
    assert len(log.events) >= seen  # every line written before the kill
    assert len(steps) > 100
    assert [s.step for s in steps] == list(range(len(steps)))
    assert log.bad_lines == ()


def test_exception_ends_failed_with_the_error() -> None:
    """An exception leaving the block ends the run `failed` and re-raises."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        with pytest.raises(KeyError), hub.run("fails"):
            raise KeyError("missing")
    (end,) = sink.of_type(RunEnd)
    assert (end.status, end.error) == (RunStatus.FAILED, "KeyError: 'missing'")


@pytest.mark.parametrize(
    ("exc", "status"),
    [(None, RunStatus.FINISHED), (ValueError("x"), RunStatus.FAILED),
     (KeyboardInterrupt(), RunStatus.KILLED), (SystemExit(0), RunStatus.FINISHED),
     (SystemExit(2), RunStatus.FAILED), (GeneratorExit(), RunStatus.KILLED)],
)
def test_status_for_each_way_out(exc: BaseException | None, status: RunStatus) -> None:
    """Each way of leaving a run's block maps to its documented status."""
    from rlobs._run import status_for

    assert status_for(exc)[0] is status


def test_ending_and_closing_twice_is_harmless() -> None:
    """`run.end` and `hub.close` are idempotent; later steps are ignored."""
    sink = RecordingSink()
    hub = rlobs.Hub([sink], heartbeat_s=0)
    run = hub.run("twice").start()
    run.step(1.0)
    first = run.end()
    assert run.end(RunStatus.FAILED) is first
    run.step(1.0)
    hub.close()
    hub.close()
    assert [e.status for e in sink.of_type(RunEnd)] == [RunStatus.FINISHED]
    assert sink.closed
    with pytest.raises(rlobs.HubClosedError):
        hub.run("after")


def test_closing_the_hub_ends_open_runs_killed() -> None:
    """Runs still open when the hub closes end `killed` in every sink."""
    sink = RecordingSink()
    hub = rlobs.Hub([sink], heartbeat_s=0).start()
    runs = [hub.run(f"open-{i}").start() for i in range(3)]
    hub.close()
    assert all(r.result is not None and r.result.status is RunStatus.KILLED for r in runs)
    assert len(sink.of_type(RunEnd)) == 3


def test_heartbeats_mark_a_live_run() -> None:
    """Heartbeats arrive for an open run at the configured interval."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0.02) as hub, hub.run("alive") as run:
        run.step(1.0)
        assert sink.wait_for(lambda s: len(s.of_type(rlobs.Heartbeat)) >= 2, timeout_s=5)
    assert sink.of_type(rlobs.Heartbeat)[0].run_id == run.run_id


def test_ending_runs_does_not_wait_unbounded_for_a_held_run_lock() -> None:
    """A run whose lock is never released (a signal mid-step) still ends, within the bound."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        run = hub.run("held").start()
        run.step(1.0)
        assert run._lock.acquire()  # as the interrupted step of a signal handler's thread
        began = time.monotonic()
        hub.end_open_runs(RunStatus.KILLED, "terminated by SIGTERM", lock_wait_s=0.1)
        waited = time.monotonic() - began
        run._lock.release()
    assert waited < 5
    (end,) = sink.of_type(RunEnd)
    assert (end.status, end.steps) == (RunStatus.KILLED, 1)
    assert len(sink.of_type(rlobs.Step)) == 1


_STEPPING = """
import signal, sys, rlobs
signal.signal(signal.SIGINT, signal.default_int_handler)
with rlobs.Hub(["jsonl"], heartbeat_s=0, handle_signals=True) as hub, \\
        hub.run("stepping") as run:
    print(run.run_id, flush=True)
    t = 0
    while True:
        run.step(0.5, {"t": float(t)}, done=t % 7 == 6)
        t += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_point_of_a_step_ends_the_run_whole(sig: int,
                                                            runs_dir: Path) -> None:
    """30 signals at random moments of a loop stepping flat out: each process exits
    within 1 s, and each log's end counts exactly the steps, reward and episodes the log
    holds (a step cut short is either whole in the log or absent)."""
    import random

    rng = random.Random(sig)
    env = {**os.environ, "RLOBS_JSONL_DIR": str(runs_dir)}
    env.pop("RLOBS_HANDLE_SIGNALS", None)
    slow = []
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", _STEPPING], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        time.sleep(rng.uniform(0.01, 0.2))
        proc.send_signal(sig)
        sent = time.monotonic()
        proc.wait(timeout=30)
        proc.stdout.close()
        if time.monotonic() - sent > 1.0:
            slow.append(time.monotonic() - sent)
        log = _log(runs_dir, run_id)
        end = log.end
        assert end is not None and end.status is RunStatus.KILLED
        steps = log.steps
        assert [s.step for s in steps] == list(range(len(steps)))
        assert end.steps == len(steps)
        assert end.total_reward == (steps[-1].cumulative_reward if steps else 0.0)
        assert end.episodes == sum(s.episode_return is not None for s in steps)
        assert log.bad_lines == () and log.torn_tail is None
    assert slow == [], f"{len(slow)} of 30 exits took longer than 1 s: {slow}"
