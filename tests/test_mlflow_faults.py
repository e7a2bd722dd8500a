"""MLflow sink under faults: server down, killed and restarted, SIGTERM, SIGKILL, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run, poll, steps_of
from servers import MlflowServer, free_port

import rlobs
from rlobs._cli import main
from sinks.mlflow import MlflowSink
from sinks.mlflow._sender import Sender

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server these tests start, kill and restart (not started yet)."""
    workdir = tmp_path_factory.mktemp("mlflow-faults")
    server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir)
    yield server
    server.kill()  # nothing to keep: no need to wait for a graceful stop


def _detail(hub: rlobs.Hub) -> str:
    return next(s.detail or "" for s in hub.status() if s.name == "mlflow")


def _caught_up(hub: rlobs.Hub) -> bool:
    return "values sent, 0 buffered" in _detail(hub)


def test_server_not_started_at_run_start(own_server: MlflowServer) -> None:
    """A run starts against a dead server, goes on, and every step lands once it is up."""
    sink = MlflowSink(own_server.url, experiment_name(), max_retry_interval_s=1.0)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("down-a") as run:
        for _ in range(20):
            run.step(1.0)
        assert poll(lambda: "unreachable" in _detail(hub), 30)
        own_server.start()
        for _ in range(20):
            run.step(1.0)
        hub.flush()
        assert poll(lambda: _caught_up(hub), 90)
    found = find_run(client(own_server.url), run.run_id)
    assert steps_of(client(own_server.url), found.info.run_id, "step_reward") == list(range(40))
    assert found.info.status == "FINISHED"


def test_server_killed_and_restarted_mid_run(own_server: MlflowServer, runs_dir: Path) -> None:
    """Server SIGKILLed mid-run and restarted: after run and replay, each step once."""
    if not own_server.healthy():
        own_server.start()
    exp = experiment_name()
    sink = MlflowSink(own_server.url, exp, max_retry_interval_s=1.0)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("kill-a") as run:
        for i in range(60):
            run.step(1.0, {"i": float(i)})
            if i == 20:
                hub.flush()
                own_server.kill()
            if i == 40:
                own_server.start()
    with rlobs.Hub([MlflowSink(own_server.url, exp)], heartbeat_s=0) as hub:
        hub.replay(rlobs.read_run(runs_dir / f"{run.run_id}.jsonl"))
    c = client(own_server.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "i") == list(range(60))
    assert found.info.status == "FINISHED"


def test_outage_for_the_whole_run_then_replay_cli(mlflow_server: MlflowServer, runs_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLflow unreachable throughout, the run ends fine; ``rlobs replay`` sends it all."""
    exp = experiment_name()
    dead = MlflowSink(f"http://127.0.0.1:{free_port()}", exp, end_wait_s=0.5)
    with rlobs.Hub(["jsonl", dead], heartbeat_s=0) as hub, hub.run("out-a") as run:
        for _ in range(25):
            run.step(1.0)
    assert run.result is not None and run.result.completed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("RLOBS_MLFLOW_EXPERIMENT", exp)
    assert main(["replay", str(runs_dir / f"{run.run_id}.jsonl"), "--sinks", "mlflow"]) == 0
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(25))
    assert found.info.status == "FINISHED"


def test_buffer_is_bounded_and_losses_counted(runs_dir: Path) -> None:
    """While MLflow is unreachable the buffer stops at its bound and counts what it lost."""
    sink = MlflowSink(f"http://127.0.0.1:{free_port()}", experiment_name(), max_buffer=100,
                      end_wait_s=0.5)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("bound-a") as run:
        for _ in range(100):
            run.step(1.0)
        hub.flush()
        detail = poll(lambda: "unreachable" in (sink.detail() or "") and sink.detail(), 30)
    assert "; 100 values buffered, 100 lost" in detail
    assert len(rlobs.read_run(runs_dir / f"{run.run_id}.jsonl").steps) == 100


_CHILD = textwrap.dedent("""
    import sys, time, rlobs
    from sinks.mlflow import MlflowSink
    uri, exp, run_id = sys.argv[1:4]
    with rlobs.Hub(["jsonl", MlflowSink(uri, exp)], heartbeat_s=0.2) as hub:
        with hub.run("child-a", run_id=run_id) as run:
            while True:
                run.step(1.0)
                time.sleep(0.005)
""")


def _start_child(server: MlflowServer, runs_dir: Path, run_id: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLOBS_HANDLE_SIGNALS": "1",
           "RLOBS_JSONL_DIR": str(runs_dir)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, server.url, experiment_name(),
                             run_id], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _running_with_steps(server: MlflowServer, run_id: str) -> bool:
    found = find_run(client(server.url), run_id)
    return bool(found and found.info.status == "RUNNING"
                and "step_reward" in found.data.metrics)


def test_sigterm_mid_run_ends_killed(mlflow_server: MlflowServer, runs_dir: Path) -> None:
    """SIGTERM to a process mid-run leaves its MLflow run KILLED, never RUNNING."""
    child = _start_child(mlflow_server, runs_dir, "20990101-000000-sigterm1")
    try:
        assert poll(lambda: _running_with_steps(mlflow_server, "20990101-000000-sigterm1"))
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        child.kill()
    found = find_run(client(mlflow_server.url), "20990101-000000-sigterm1")
    assert found.info.status == "KILLED"


def test_sigkill_then_replay_backfills_once(mlflow_server: MlflowServer,
                                            runs_dir: Path) -> None:
    """After a SIGKILL, replaying the log stores every logged step exactly once, KILLED."""
    run_id = "20990101-000000-sigkill1"
    child = _start_child(mlflow_server, runs_dir, run_id)
    try:
        assert poll(lambda: _running_with_steps(mlflow_server, run_id))
    finally:
        child.kill()
        child.wait(timeout=30)
    log = rlobs.read_run(runs_dir / f"{run_id}.jsonl")
    found = find_run(client(mlflow_server.url), run_id)
    exp = client(mlflow_server.url).get_experiment(found.info.experiment_id).name
    with rlobs.Hub([MlflowSink(mlflow_server.url, exp)], heartbeat_s=0) as hub:
        hub.replay(log)
    c = client(mlflow_server.url)
    steps = steps_of(c, found.info.run_id, "step_reward")
    assert steps == list(range(len(steps))) and len(steps) >= len(log.steps)
    assert find_run(c, run_id).info.status == "KILLED"


def test_upload_failure_while_ending_still_ends_run(mlflow_server: MlflowServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The run log's upload failing at run end still sets the final status."""
    def broken(self: Sender, state: object) -> None:
        raise RuntimeError("upload broke (on purpose)")

    monkeypatch.setattr(Sender, "_upload_log", broken)
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("endfail-a") as run:
        run.step(1.0)
    assert find_run(client(mlflow_server.url), run.run_id).info.status == "FINISHED"
    assert "1 requests failed" in (sink.detail() or "")


def test_hook_error_while_ending_still_ends_run(mlflow_server: MlflowServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside ``on_run_end`` is counted by the hub and the run still ends."""
    def broken(self: MlflowSink, event: object, conv: object) -> None:
        raise RuntimeError("final metrics broke (on purpose)")

    monkeypatch.setattr(MlflowSink, "_final", broken)
    with rlobs.Hub([MlflowSink(mlflow_server.url, experiment_name())], heartbeat_s=0) as hub:
        with hub.run("endfail-b") as run:
            run.step(1.0)
        errors = hub.status()[0].errors
    assert errors == 1
    found = poll(lambda: (r := find_run(client(mlflow_server.url), run.run_id))
                 and r.info.status != "RUNNING" and r)
    assert found.info.status == "FINISHED"


def test_postgres_backend_round_trip_and_replay(mlflow_server_pg: MlflowServer,
                                                runs_dir: Path) -> None:
    """On a PostgreSQL-backed server a run arrives whole and replay adds nothing."""
    exp = experiment_name()
    sink = MlflowSink(mlflow_server_pg.url, exp)
    hub = rlobs.Hub(["jsonl", sink], heartbeat_s=0)
    with hub, hub.run("pg-a", params={"lr": 0.1}) as run:
        for _ in range(30):
            run.step(1.0)
    with rlobs.Hub([MlflowSink(mlflow_server_pg.url, exp)], heartbeat_s=0) as hub:
        hub.replay(rlobs.read_run(runs_dir / f"{run.run_id}.jsonl"))
    c = client(mlflow_server_pg.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(30))
    assert found.info.status == "FINISHED" and found.data.params["lr"] == "0.1"
