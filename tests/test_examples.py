"""Every example runs as its own process with ``RLOBS_SINKS=jsonl`` and logs what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlobs import RunLog, RunStatus, RunUpdate, read_run
from rlobs._events import Artifact

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run_example(name: str, runs: Path, *args: str) -> dict[str, RunLog]:
    """Run ``examples/<name>.py``; its run logs by run name."""
    env = {**os.environ, "RLOBS_SINKS": "jsonl", "RLOBS_JSONL_DIR": str(runs),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args],
                          cwd=runs.parent, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    logs = [read_run(p) for p in sorted(runs.glob("*.jsonl"))]
    assert all(log.end is not None and log.end.status is RunStatus.FINISHED for log in logs)
    return {log.start.name: log for log in logs}


def _summary(log: RunLog) -> dict[str, float]:
    out: dict[str, float] = {}
    for event in log.events:
        if isinstance(event, RunUpdate):
            out.update(event.metrics)
    return out


def test_quickstart(runs_dir: Path) -> None:
    """The smallest loop: one run of 1000 steps and 10 episodes."""
    logs = _run_example("quickstart", runs_dir)
    end = logs["quickstart"].end
    assert end is not None and (end.steps, end.episodes) == (1000, 10)


def test_ppo_cartpole(runs_dir: Path) -> None:
    """The PPO loop: every env step recorded via the wrapper, actor spans, loss summary."""
    log = _run_example("ppo_cartpole", runs_dir, "--iterations", "2", "--n-steps", "128")[
        "ppo-cartpole"]
    assert len(log.steps) == 256 and sum(1 for s in log.steps if s.done) >= 2
    names = {s.name for s in log.spans}
    assert {"actor.forward", "env.step", "learner.update"} <= names
    assert log.start.params["algo"] == "ppo" and "train/loss" in _summary(log)


def test_sweep(runs_dir: Path) -> None:
    """The sweep: one parent and six children, each child pointing at the parent."""
    logs = _run_example("sweep", runs_dir)
    parent = logs.pop("sweep-bandit")
    assert len(logs) == 6
    assert {log.start.parent_id for log in logs.values()} == {parent.start.run_id}
    assert all(len(log.steps) == 500 for log in logs.values())
    best = max(_summary(log)["final_mean_reward"] for log in logs.values())
    assert _summary(parent)["best_final_mean_reward"] == best


def test_backtest(runs_dir: Path, tmp_path: Path) -> None:
    """The backtest: stats as summary metrics, curve CSV + PNG and trades CSV attached."""
    log = _run_example("backtest", runs_dir, "--out", str(tmp_path / "files"))[
        "backtest-macross"]
    assert {"total_return", "sharpe", "max_drawdown", "trades", "win_rate"} <= set(
        _summary(log))
    files = [Path(e.path) for e in log.events if isinstance(e, Artifact)]
    assert sorted(f.name for f in files) == ["equity.csv", "equity.png", "trades.csv"]
    trades = (tmp_path / "files" / "trades.csv").read_text().splitlines()
    assert len(trades) - 1 == _summary(log)["trades"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_agents(runs_dir: Path, backend: str) -> None:
    """Concurrent agents: each child run holds exactly its own turns' spans and steps."""
    logs = _run_example("async_agents", runs_dir, "--backend", backend, "--agents", "3",
                        "--turns", "4")
    team = logs.pop("agents-team")
    assert len(logs) == 3
    for log in logs.values():
        assert log.start.parent_id == team.start.run_id
        assert len(log.steps) == 4 and len(log.spans) == 12
        assert {s.run_id for s in log.spans} == {log.start.run_id}
        assert all(s.metrics["llm.calls"] == 1 and s.metrics["llm.cost_usd"] > 0
                   for s in log.steps)
        assert _summary(log)["llm.calls_total"] == 4
