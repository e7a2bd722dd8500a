"""``rlobs compare-mlflow``: the comparison read back from a real MLflow server."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from mlflow_support import experiment_name
from servers import MlflowServer

import rlobs
from rlobs.compare import GroupScore, compare
from sinks.mlflow import MlflowSink, compare_mlflow, register_compare
from sinks.mlflow._compare import default_tracking_uri

# (algo, seed) -> episode returns; each episode is 3 steps, so episodes end at steps 2, 5, ...
RETURNS = {("a", 0): [1.0, 2.0, 3.0, 4.0], ("a", 1): [2.0, 2.0, 5.0, 7.0],
           ("b", 0): [10.0, 11.0, 12.0], ("b", 1): [9.0, 13.0, 14.0]}


@pytest.fixture(scope="module")
def logged(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[str, Path]:
    """Four runs (algo a/b × 2 seeds) and an episode-less parent, in JSONL and MLflow.

    Logged once for the module (the tests only read): returns (experiment, JSONL dir).
    """
    name, runs = experiment_name(), tmp_path_factory.mktemp("compare-runs")
    hub = rlobs.Hub(["jsonl", MlflowSink(mlflow_server.url, name)], heartbeat_s=0,
                    provenance=False, handle_signals=False,
                    env={"RLOBS_JSONL_DIR": str(runs)})
    with hub, hub.run("sweep") as parent:
        for (algo, seed), returns in RETURNS.items():
            with hub.run(f"{algo}-s{seed}", params={"seed": seed}, tags={"algo": algo},
                         parent=parent) as run:
                for ret in returns:
                    for t in range(3):
                        run.step(ret / 3, done=(t == 2))
    assert hub.flush(60)
    return name, runs


@pytest.fixture
def experiment(logged: tuple[str, Path]) -> str:
    """The experiment holding the logged runs."""
    return logged[0]


def _figures(groups: list[GroupScore]) -> dict[str, tuple[int, int, list[float], list[float]]]:
    """Per group: runs, episodes, and the sorted per-run final and mean returns."""
    return {g.group: (len(g.runs), sum(len(r.episodes) for r in g.runs),
                      sorted(r.final for r in g.runs), sorted(r.mean for r in g.runs))
            for g in groups}


def test_mlflow_comparison_matches_jsonl(mlflow_server: MlflowServer,
                                         logged: tuple[str, Path]) -> None:
    """Same groups, run and episode counts, finals and means as the JSONL comparison."""
    experiment, runs = logged
    from_mlflow, skipped = compare_mlflow(mlflow_server.url, [experiment], "algo", last=2)
    from_jsonl, jsonl_skipped = compare([runs], "algo", last=2)
    assert _figures(from_mlflow) == _figures(from_jsonl)
    assert _figures(from_mlflow)["a"] == (2, 8, [3.5, 6.0], [2.5, 4.0])
    assert [g.final.mean for g in from_mlflow] == pytest.approx(
        [g.final.mean for g in from_jsonl])
    assert skipped == ["sweep"] and len(jsonl_skipped) == 1


def test_mlflow_comparison_groups_by_param_and_keeps_steps(mlflow_server: MlflowServer,
                                                           experiment: str) -> None:
    """A param groups when no tag matches; episodes keep the step they ended at."""
    groups, _ = compare_mlflow(mlflow_server.url, [experiment], "seed")
    assert [(g.group, len(g.runs)) for g in groups] == [("0", 2), ("1", 2)]
    b0 = next(r for g in groups for r in g.runs if r.episodes[0][1] == 10.0)
    assert [s for s, _ in b0.episodes] == [2, 5, 8]


def test_unknown_experiment_is_a_clear_error(mlflow_server: MlflowServer,
                                             experiment: str) -> None:
    """An experiment that does not exist is named in the error, with the close name and
    the experiments that do exist."""
    with pytest.raises(rlobs.RlobsError, match="no-such-exp") as caught:
        compare_mlflow(mlflow_server.url, ["no-such-exp"], "algo")
    assert experiment in str(caught.value) and "experiments there:" in str(caught.value)
    with pytest.raises(rlobs.RlobsError, match=f"did you mean '{experiment}'"):
        compare_mlflow(mlflow_server.url, [experiment[:-1]], "algo")


def test_runs_go_to_the_documented_experiment(mlflow_server: MlflowServer,
                                              runs_dir: Path) -> None:
    """docs/cli.md's example: runs of ``examples/ppo_cartpole.py`` (experiment
    ``cartpole``) are compared by naming that experiment, which the sink created."""
    hub = rlobs.Hub(["jsonl", MlflowSink(mlflow_server.url)], heartbeat_s=0,
                    provenance=False, handle_signals=False)
    with hub:
        for lr in ("3e-3", "3e-4"):
            with hub.run("ppo-cartpole", params={"lr": lr}, experiment="cartpole") as run:
                for t in range(6):
                    run.step(1.0, done=(t % 3 == 2))
    assert hub.flush(60)
    groups, _ = compare_mlflow(mlflow_server.url, ["cartpole"], "lr")
    example = Path(__file__).resolve().parents[1] / "examples" / "ppo_cartpole.py"
    assert 'experiment="cartpole"' in example.read_text()
    assert sorted(g.group for g in groups) == ["3e-3", "3e-4"]


def test_cli_prints_table_and_plots(mlflow_server: MlflowServer, experiment: str,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rlobs compare-mlflow`` prints one row per group, the skipped parent, and a PNG."""
    parser = argparse.ArgumentParser()
    register_compare(parser.add_subparsers())
    out = tmp_path / "curves.png"
    args = parser.parse_args(["compare-mlflow", experiment, "--by", "algo", "--last", "2",
                              "--tracking-uri", mlflow_server.url, "--plot", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "episode return by algo" in text and "4.75 ± 1.77" in text
    assert "skipped 1 run(s)" in text and "sweep" in text
    assert out.read_bytes().startswith(b"\x89PNG")


def test_default_uri_is_env_then_embedded_store(runs_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--tracking-uri``: ``MLFLOW_TRACKING_URI``, else the sink's embedded store."""
    assert default_tracking_uri() == f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri() == "http://mlflow:5000"
