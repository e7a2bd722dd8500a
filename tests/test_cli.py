"""The command line: status, show, demo, replay."""

from __future__ import annotations

from pathlib import Path

import pytest

import rlobs
from rlobs._cli import main


def _a_run(runs_dir: Path) -> Path:
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub, hub.run("cli-run") as run:
        for t in range(30):
            run.step(1.0, done=t % 10 == 9)
    return runs_dir / f"{run.run_id}.jsonl"


def test_status_lists_selected_sinks_with_uri_passwords_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rlobs status` shows the selection and never prints a URI password."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:hunter2@db/mlflow")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "selected sinks: jsonl" in out
    assert "hunter2" not in out and "postgresql://u:***@db/mlflow" in out


def test_status_fails_fast_on_an_unknown_sink(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown name is a clear error with exit status 2."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl,nosuch")
    assert main(["status"]) == 2
    assert "unknown sink 'nosuch'" in capsys.readouterr().err


def test_show_summarises_a_run(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rlobs show` prints status, steps, total reward and episodes."""
    assert main(["show", str(_a_run(runs_dir))]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "30.0" not in out.split("total reward")[0]
    assert "total reward" in out and "30" in out and "episodes" in out


def test_show_reports_a_run_that_never_ended(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log without an end is shown as such, with its last sign of life."""
    path = _a_run(runs_dir)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    assert main(["show", str(path)]) == 0
    assert "no end recorded" in capsys.readouterr().out


def test_demo_runs_on_the_selected_sinks(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rlobs demo` logs a finished run with steps and spans to the JSONL directory."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    assert main(["demo", "--episodes", "5"]) == 0
    (path,) = runs_dir.glob("*.jsonl")
    log = rlobs.read_run(path)
    assert log.end is not None and log.end.status is rlobs.RunStatus.FINISHED
    assert log.end.episodes == 5 and len(log.spans) == 2 * len(log.steps)
    assert str(path) in capsys.readouterr().out.replace("\n", "")


def test_replay_needs_a_known_sink(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rlobs replay` with an unknown sink name fails with exit status 2."""
    assert main(["replay", str(_a_run(runs_dir)), "--sinks", "nosuch"]) == 2
