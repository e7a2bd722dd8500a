"""The command line: status, show, demo, replay."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def test_a_misspelt_sink_gets_a_did_you_mean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`RLOBS_SINKS=jsonl,mlfow` (and `sync --sinks consol`) name the sink meant."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl,mlfow")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "unknown sink 'mlfow' (did you mean 'mlflow'?)" in err and "Traceback" not in err
    monkeypatch.delenv("RLOBS_SINKS")
    assert main(["sync", "--sinks", "consol"]) == 2
    assert "did you mean 'console'?" in capsys.readouterr().err


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


@pytest.mark.slow
def test_make_demo_output_off_a_terminal(tmp_path: Path) -> None:
    """`rlobs demo | cat` on the embedded default: hints whole on one line each (no
    80-column wrap), commands runnable as printed (the venv's own executables when it is
    not activated), and MLflow already has the run when the demo says so."""
    from mlflow_support import client, find_run

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLOBS_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", "rlobs", "demo", "--episodes", "10"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    (log_line,) = [line for line in lines if line.startswith("run log: ")]
    path = log_line.split()[2]
    assert log_line.endswith(f"rlobs show {path})") and (tmp_path / path).is_file()
    venv_bin = Path(sys.executable).parent
    activated = shutil.which("mlflow") == str(venv_bin / "mlflow")
    mlflow_ui = "mlflow" if activated else str(venv_bin / "mlflow")
    (hint,) = [line for line in lines if "ui --backend-store-uri" in line]
    store = f"sqlite:///{tmp_path.resolve() / 'rlobs-runs' / 'mlflow.db'}"
    assert hint == f"{mlflow_ui} ui --backend-store-uri {store}"
    run_id = Path(path).stem
    found = find_run(client(store), run_id)
    assert found is not None and found.info.status == "FINISHED"


WRONG = [
    ["show", "{tmp}/missing.jsonl"], ["show", "{tmp}/not-a-run.txt"], ["show", "{tmp}/empty"],
    ["show", "{tmp}/no/such/dir"], ["plot", "{tmp}/empty"], ["plot", "{tmp}/not-a-run.txt"],
    ["export-trace", "{tmp}/missing.jsonl"], ["compare", "{tmp}/missing.jsonl", "--by", "x"],
    ["compare", "{tmp}/empty", "--by", "x"], ["compare", "{tmp}/not-a-run.txt", "--by", "x"],
    ["tail", "{tmp}/no/such/dir/run.jsonl"], ["tail", "{tmp}/not-a-run.txt", "--timeout", "1"],
    ["tail", "--timeout", "soon"], ["compare", "{tmp}", "--by", "x", "--last", "zero"],
    ["show", "{tmp}/a-dir.jsonl"], ["nosuchcommand"],
]


@pytest.mark.parametrize("argv", WRONG, ids=[" ".join(a) for a in WRONG])
def test_a_wrong_path_or_argument_is_one_clear_line(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No traceback for a wrong path or argument: a message on stderr and exit 2."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-dir.jsonl").mkdir()
    (tmp_path / "not-a-run.txt").write_text("hello\n")
    args = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() and "Traceback" not in err


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="needs a virtualenv")
def test_printed_commands_name_the_venv_when_it_is_not_activated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """From the directory holding `.venv`, hints say `.venv/bin/mlflow ...`; with the venv
    activated (its bin first on PATH), the bare word."""
    from rlobs._demo import runnable

    venv_bin = Path(sys.executable).parent
    monkeypatch.chdir(venv_bin.parent.parent)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert runnable("mlflow ui --port 5001") == \
        f"{venv_bin.parent.name}/{venv_bin.name}/mlflow ui --port 5001"
    assert runnable("no-such-program --x") == "no-such-program --x"
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert runnable("mlflow ui --port 5001") == "mlflow ui --port 5001"
