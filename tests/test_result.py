"""``rlobs.log_result``: an offline result as one run, on any sink."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run
from servers import MlflowServer

import rlobs
from rlobs.testing import RecordingSink
from sinks.mlflow import MlflowSink


def _log(hub: rlobs.Hub, tmp_path: Path) -> rlobs.Run:
    return rlobs.log_result(
        "backtest-a", hub=hub, params={"window": 20},
        results={"sharpe": 1.5, "trades": 42, "verdict": "keep"},
        curves={"equity": [1.0, 1.1, 1.05]},
        tables={"trades": [{"day": 1, "pnl": 0.1}, {"day": 2, "pnl": -0.05}]},
        directory=tmp_path / "files")


def test_numbers_are_summaries_and_text_is_tags(tmp_path: Path) -> None:
    """Numeric results become summary metrics, other values ``result.*`` tags."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        run = _log(hub, tmp_path)
    assert hub.flush(60)
    start = sink.of_type(rlobs.RunStart)[0]
    updates = sink.of_type(rlobs.RunUpdate)
    assert start.params == {"window": 20} and start.tags["result.verdict"] == "keep"
    assert {"sharpe": 1.5, "trades": 42.0} in [dict(u.metrics) for u in updates]
    assert run.result is not None and run.result.completed


def test_curves_and_tables_become_csv_and_png_artifacts(tmp_path: Path) -> None:
    """Each curve is a CSV and a PNG, each table a CSV, all attached to the run."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        _log(hub, tmp_path)
    assert hub.flush(60)
    names = sorted(Path(a.path).name for a in sink.of_type(rlobs.Artifact))
    assert names == ["equity.csv", "equity.png", "trades.csv"]
    assert (tmp_path / "files" / "equity.csv").read_text().splitlines() == [
        "index,value", "0,1.0", "1,1.1", "2,1.05"]
    assert (tmp_path / "files" / "trades.csv").read_text().splitlines()[0] == "day,pnl"


def test_uneven_curve_columns_are_rejected(tmp_path: Path) -> None:
    """A curve whose columns differ in length is a ValueError, not a silent cut."""
    with rlobs.Hub([RecordingSink()], heartbeat_s=0) as hub, pytest.raises(ValueError):
        rlobs.log_result("bad", hub=hub, results={}, curves={"c": {"x": [1, 2], "y": [1]}},
                         directory=tmp_path)
    assert hub.flush(60)


@pytest.mark.slow
def test_result_in_mlflow(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """In MLflow the result has its metrics, tags and the files under ``results/``."""
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        run = _log(hub, tmp_path)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert found.data.metrics["sharpe"] == 1.5 and found.data.tags["result.verdict"] == "keep"
    paths = sorted(a.path for a in c.list_artifacts(found.info.run_id, "results"))
    assert paths == ["results/equity.csv", "results/equity.png", "results/trades.csv"]
    assert not {"steps", "total_reward", "episodes", "completed"} & set(found.data.metrics)


def test_result_nests_under_the_current_run() -> None:
    """Inside an open run, ``log_result`` is that run's child; ``parent=None`` opts out."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("train") as train:
        nested = rlobs.log_result("eval", hub=hub, results={"return": 1.0})
        top = rlobs.log_result("other", hub=hub, results={"return": 2.0}, parent=None)
    assert hub.flush(60)
    starts = {s.run_id: s for s in sink.of_type(rlobs.RunStart)}
    assert starts[nested.run_id].parent_id == train.run_id
    assert starts[top.run_id].parent_id is None
    assert starts[nested.run_id].tags["rlobs.kind"] == "result"


@pytest.mark.slow
def test_result_in_mlflow_nested_and_in_its_own_experiment(mlflow_server: MlflowServer) -> None:
    """In MLflow a nested result joins its parent's experiment and nests under it; one
    with ``experiment=`` goes there instead."""
    experiment, other = experiment_name(), experiment_name()
    sink = MlflowSink(mlflow_server.url, experiment)
    with rlobs.Hub([sink], heartbeat_s=0) as hub, \
            hub.run("train", experiment=experiment) as train:
        train.step(1.0)
        nested = rlobs.log_result("eval", hub=hub, results={"return": 1.0})
        moved = rlobs.log_result("eval-elsewhere", hub=hub, results={"return": 2.0},
                                 experiment=other, parent=None)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    parent, child, away = (find_run(c, r.run_id) for r in (train, nested, moved))
    assert child.info.experiment_id == parent.info.experiment_id
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert c.get_experiment(away.info.experiment_id).name == other
