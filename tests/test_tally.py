"""One truth across commands: ``show``, ``compare``, ``plot``, ``tail`` and the console
count the same steps, episodes, summaries and children (:class:`rlobs.RunTally`)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import gymnasium as gym
import pytest

import rlobs
from rlobs import Hub, RunTally, Step, list_runs
from rlobs._cli import main
from rlobs._compare import compare
from rlobs._curves import episodes
from rlobs._reader import read_run
from rlobs._tail import watch
from rlobs.integrations.gymnasium import RecordVectorEpisodes
from rlobs.testing import RecordingSink
from sinks.console import ConsoleSink


def _hub(directory: Path) -> Hub:
    return Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
               env={"RLOBS_JSONL_DIR": str(directory)})


def _vector_run(directory: Path, per_env: bool) -> tuple[Path, int]:
    """A real 3-env CartPole run; the path and how many episodes gymnasium ended."""
    env = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    ended = 0
    with _hub(directory) as hub, hub.run("vec", tags={"algo": "random"}) as run:
        recorded = RecordVectorEpisodes(env, run, per_env_metrics=per_env)
        recorded.action_space.seed(1)
        recorded.reset(seed=1)
        for _ in range(150):
            _, _, term, trunc, _ = recorded.step(recorded.action_space.sample())
            ended += int((term | trunc).sum())
    env.close()
    path = run.log_path
    assert path is not None
    return path, ended


def _shown(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    assert main(["show", *argv]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows


@pytest.mark.parametrize("per_env", [True, False])
def test_vector_env_episodes_agree_everywhere(
        tmp_path: Path, per_env: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """A vector-env run: show, compare, plot's curve and the console count gymnasium's
    episodes, with or without per-env metrics."""
    path, ended = _vector_run(tmp_path, per_env)
    assert ended > 3
    assert _shown(capsys, str(path))["episodes"] == str(ended)
    groups, _ = compare([path], "algo")
    assert len(groups[0].runs[0].episodes) == ended
    assert len(episodes(read_run(path))) == ended
    out = io.StringIO()
    watch(path, ConsoleSink(out, terminal=False, interval_s=0.0))
    assert re.search(rf"episodes\s+{ended}\b", out.getvalue())


def test_a_reused_run_id_counts_both_segments_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs with one run id (a resume): steps and episodes continue, and show,
    compare and the tally agree on the whole."""
    for _ in range(2):
        with _hub(tmp_path) as hub, hub.run("again", run_id="same", tags={"k": "v"}) as run:
            for i in range(8):
                run.step(1.0, done=(i % 4 == 3))
    tally = RunTally.read(tmp_path / "same.jsonl")
    assert (tally.segments, tally.steps, tally.episode_count, tally.total_reward) == \
        (2, 16, 4, 16.0)
    assert [s for s, _ in tally.episodes] == [3, 7, 11, 15]
    rows = _shown(capsys, str(tmp_path / "same.jsonl"))
    assert (rows["steps"], rows["episodes"], rows["total reward"]) == ("16", "4", "16")
    assert rows["status"] == "finished" and rows["segments"].startswith("2")
    groups, _ = compare([tmp_path], "k")
    assert len(groups[0].runs[0].episodes) == 4
    seen = RecordingSink()
    end = watch(tmp_path / "same.jsonl", seen, timeout_s=30)  # tail follows to the last end
    assert end.steps == 16 and len(seen.of_type(Step)) == 16


def test_show_displays_summaries_results_and_children(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Summary metrics, log_result's results (numbers and text) and child runs appear."""
    with _hub(tmp_path) as hub:
        with hub.run("sweep") as parent:
            parent.log_summary({"best_lr": 0.003})
            rlobs.log_result("eval-a", results={"sharpe": 1.25, "verdict": "keep"},
                             hub=hub, parent=parent, directory=tmp_path / "files")
    rows = _shown(capsys, str(parent.log_path))
    assert rows["summary best_lr"] == "0.003"
    assert rows["child"].startswith("eval-a (")
    child = next(e for e in list_runs(tmp_path) if e.parent_id == parent.run_id)
    rows = _shown(capsys, str(child.path))
    assert rows["summary sharpe"] == "1.25" and rows["result verdict"] == "keep"
    assert rows["parent"] == parent.run_id


def test_show_takes_a_directory_latest_or_a_run_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A directory means its latest run; `latest` and a bare run id look in
    RLOBS_JSONL_DIR."""
    with _hub(tmp_path) as hub:
        for name in ("first", "second"):
            with hub.run(name, run_id=name) as run:
                run.step(1.0)
    monkeypatch.setenv("RLOBS_JSONL_DIR", str(tmp_path))
    assert _shown(capsys, str(tmp_path))["run"] == "second (second)"
    assert _shown(capsys, "latest")["run"] == "second (second)"
    assert _shown(capsys)["run"] == "second (second)"
    assert _shown(capsys, "first")["run"] == "first (first)"


@pytest.mark.parametrize("command", ["show", "plot", "export-trace"])
def test_a_wrong_path_is_a_clear_error(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file, an empty directory: one line saying what was looked for, exit 2."""
    for wrong in (tmp_path / "nope.jsonl", tmp_path / "no" / "dir.jsonl", tmp_path):
        assert main([command, str(wrong)]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
        assert "no such run log" in err or "no run logs in" in err
