"""The shipper process: found or started per log directory and configuration, restart-safe,
reporting what it still has to ship, gone once everything is shipped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run, poll, steps_of
from servers import FaultProxy, MlflowServer

import rlobs
from rlobs._cli import main
from rlobs._records import read_json, shipper_statuses
from rlobs._ship import Shipper
from rlobs.testing import HangingSink
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def quick_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shippers of these tests leave 1 s after they are idle."""
    monkeypatch.setenv("RLOBS_SHIPPER_IDLE_S", "1")


def _shipper_pid(directory: Path) -> int | None:
    reports = [r for r in shipper_statuses(directory) if not r.get("exited")]
    return int(reports[0]["pid"]) if reports else None


def test_a_killed_shipper_is_replaced_and_nothing_is_shipped_twice(
        mlflow_server: MlflowServer, runs_dir: Path) -> None:
    """SIGKILL the shipper mid-delivery: the training process starts a new one within
    seconds, which picks the run up where MLflow stands — every step exactly once."""
    proxy = FaultProxy(mlflow_server.url)
    proxy.delay_s = 0.05  # a slowish server, so the kill lands mid-delivery
    try:
        sink = MlflowSink(proxy.url, experiment_name())
        c = client(mlflow_server.url)
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("restart-a") as run:
            for t in range(20_000):
                run.step(1.0, {"t": float(t)})
            assert poll(lambda: (r := find_run(c, run.run_id))
                        and steps_of(c, r.info.run_id, "t"), 90)
            first = _shipper_pid(runs_dir)
            assert first is not None
            os.kill(first, signal.SIGKILL)
            assert poll(lambda: (p := _shipper_pid(runs_dir)) and p != first, 30)
            for t in range(20_000, 20_100):
                run.step(1.0, {"t": float(t)})
        assert hub.flush(300)
    finally:
        proxy.close()
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "t") == list(range(20_100))
    assert found.info.status == "FINISHED"


def test_status_shows_what_each_sink_still_has_to_ship(
        mlflow_server: MlflowServer, runs_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While a slow server holds the shipper back, ``rlobs status`` lists the run, the
    sink, its state and what is left; once shipped, the run is complete."""
    proxy = FaultProxy(mlflow_server.url)
    proxy.delay_s = 0.3
    try:
        sink = MlflowSink(proxy.url, experiment_name())
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("status-a") as run:
            for t in range(5000):
                run.step(1.0, {"t": float(t)})
        assert poll(lambda: _shipper_pid(runs_dir), 60)
        monkeypatch.setenv("RLOBS_SINKS", "jsonl")
        time.sleep(0.5)
        main(["status"])
        out = capsys.readouterr().out
        assert run.run_id in out and "mlflow" in out
        assert "shipping" in out or "ending" in out
        assert hub.flush(300)
    finally:
        proxy.close()


def test_the_shipper_exits_once_idle(mlflow_server: MlflowServer, runs_dir: Path) -> None:
    """With every run shipped and no writer alive, the shipper leaves (its lock free)."""
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("idle-a") as run:
        run.step(1.0)
    assert hub.flush(60)
    assert poll(lambda: all(r.get("exited") for r in shipper_statuses(runs_dir)), 30)
    (report,) = shipper_statuses(runs_dir)
    assert report["rss_bytes"] > 0 and report["cpu_s"] > 0  # it imported its sinks at least
    assert hub._link is not None and not hub._link.alive()


def test_two_configurations_in_one_directory_get_two_shippers(
        mlflow_server: MlflowServer, mlflow_server_pg: MlflowServer, runs_dir: Path) -> None:
    """Runs shipped to different servers from one directory: one shipper each, and each
    run reaches only its own server."""
    hubs = [rlobs.Hub(["jsonl", MlflowSink(server.url, experiment_name())], heartbeat_s=0)
            for server in (mlflow_server, mlflow_server_pg)]
    runs = []
    for hub in hubs:
        with hub, hub.run("two-a") as run:
            run.step(1.0)
        runs.append(run)
    assert all(hub.flush(90) for hub in hubs)
    assert len(list((runs_dir / ".rlobs").glob("shipper-*.lock"))) == 2
    assert find_run(client(mlflow_server.url), runs[0].run_id) is not None
    assert find_run(client(mlflow_server.url), runs[1].run_id) is None
    assert find_run(client(mlflow_server_pg.url), runs[1].run_id) is not None
    record = read_json(runs_dir / ".rlobs" / "runs" / f"{runs[1].run_id}.json")
    assert record is not None and record["sinks"]["mlflow"]["state"] == "complete"


def test_a_chunk_counts_as_read_only_once_its_sink_took_it(runs_dir: Path) -> None:
    """While the sink is still inside a hook of a chunk the shipper read — here the run's
    end — its status does not say the run was read to its end, which ``hub.flush`` and
    ``sync`` took for shipped before the sink had the end."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, hub.run("a") as run:
        for _ in range(10):
            run.step(1.0)
    path = runs_dir / f"{run.run_id}.jsonl"
    sink = HangingSink(hooks=["on_run_end"])
    shipper = Shipper([sink], linger_s=60)
    assert shipper.track(path)
    shipper.start()
    try:
        assert sink.entered.wait(10)
        entry = shipper.status()["runs"][run.run_id]["sinks"]["hanging"]
        assert entry["offset"] < path.stat().st_size and entry["unread_bytes"] > 0
        sink.release()
        assert poll(lambda: shipper.status()["runs"][run.run_id]["sinks"]["hanging"]
                    ["offset"] == path.stat().st_size, 10)
    finally:
        sink.release()
        shipper.stop()
