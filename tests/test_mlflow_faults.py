"""MLflow through the shipper, under faults injected into real servers: a server that is
down, killed and restarted, stopped, slow or answering 500; SIGTERM and SIGKILL of the
training process. The training process never waits for MLflow; the shipper delivers every
step exactly once and sets the right status, or ends the run saying what is missing."""

from __future__ import annotations

import mmap
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow_support import all_traces, client, experiment_name, find_run, poll, steps_of
from servers import FaultProxy, MlflowServer, free_port

import rlobs
from rlobs._cli import main
from rlobs._records import deliveries
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("child_ship.py")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server these tests start, stop, kill and restart (not started yet)."""
    workdir = tmp_path_factory.mktemp("mlflow-faults")
    server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir)
    yield server
    server.kill()  # nothing to keep: no need to wait for a graceful stop


@pytest.fixture
def linger(monkeypatch: pytest.MonkeyPatch) -> float:
    """A shipper that gives up 3 s after a run ended (inherited by the shipper)."""
    monkeypatch.setenv("RLOBS_SHIPPER_LINGER_S", "3")
    monkeypatch.setenv("RLOBS_SHIPPER_IDLE_S", "1")
    return 3.0


def _mlflow(hub: rlobs.Hub) -> rlobs.SinkStatus:
    return next(s for s in hub.status() if s.name == "mlflow")


def _ten_runs(hub: rlobs.Hub, prefix: str) -> tuple[list[rlobs.Run], list[float]]:
    """Ten runs of 200 steps; how long leaving each ``with`` block took."""
    runs, exits = [], []
    for index in range(10):
        with hub.run(f"{prefix}-{index}", params={"lr": 0.1}) as run:
            for t in range(200):
                run.step(1.0, {"loss": 1.0 / (t + 1)})
            began = time.perf_counter()
        exits.append(time.perf_counter() - began)
        runs.append(run)
    return runs, exits


def _statuses(url: str, runs: list[rlobs.Run]) -> list[str | None]:
    c = client(url)
    return [(r := find_run(c, run.run_id)) and r.info.status for run in runs]


def test_server_not_started_at_run_start(own_server: MlflowServer) -> None:
    """A run against a dead server ends at once; once it is up the shipper lands every
    step and the status, with no user action."""
    sink = MlflowSink(own_server.url, experiment_name())
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("down-a") as run:
        for _ in range(40):
            run.step(1.0)
    assert poll(lambda: "unreachable" in (_mlflow(hub).detail or ""), 30)
    own_server.start()
    assert hub.flush(90)
    c = client(own_server.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(40))
    assert found.info.status == "FINISHED"


def test_server_killed_and_restarted_mid_run(own_server: MlflowServer) -> None:
    """Server SIGKILLed mid-run and restarted: the shipper tries it again within 2 s of it
    coming back, and every step lands exactly once, with no replay."""
    if not own_server.healthy():
        own_server.start()
    proxy = FaultProxy(own_server.url)  # only watches: when do requests arrive?
    try:
        sink = MlflowSink(proxy.url, experiment_name())
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("kill-a") as run:
            for i in range(60):
                run.step(1.0, {"i": float(i)})
                if i == 20:
                    assert hub.flush(60)
                    own_server.kill()
            for i in range(60, 80):
                run.step(1.0, {"i": float(i)})
        assert poll(lambda: "unreachable" in (_mlflow(hub).detail or ""), 30)
        own_server.start()
        healthy_at = time.monotonic()
        assert hub.flush(90)
    finally:
        proxy.close()
    tried_s = min(t for t in proxy.seen if t >= healthy_at) - healthy_at
    c = client(own_server.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "i") == list(range(80))
    assert found.info.status == "FINISHED"
    assert tried_s < 2.0, f"tried again {tried_s:.2f}s after the server came back"


@pytest.mark.parametrize("fault", ["healthy", "slow", "stopped", "answers 500"])
def test_leaving_a_run_is_prompt_whatever_mlflow_does(
        fault: str, own_server: MlflowServer) -> None:
    """Leaving the ``with`` block takes under 1 s (median of 10) with MLflow healthy,
    slow, stopped (SIGSTOP) or answering 500 to metric batches; afterwards the shipper
    ends every run with its status — no run left RUNNING."""
    if not own_server.healthy():
        own_server.start()
    proxy = FaultProxy(own_server.url)
    if fault == "slow":
        proxy.delay_s = 0.2
    elif fault == "answers 500":
        proxy.fail(r"/runs/log-batch")
    try:
        sink = MlflowSink(proxy.url, experiment_name())
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub:
            if fault == "stopped":
                assert hub.run("warm").start().end()
                assert hub.flush(60)  # the shipper is up, its client connected
                os.killpg(own_server.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                runs, exits = _ten_runs(hub, fault.replace(" ", "-"))
            finally:
                if fault == "stopped":
                    os.killpg(own_server.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        assert statistics.median(exits) < 1.0, exits
        assert hub.flush(180)
        assert _statuses(proxy.url, runs) == ["FINISHED"] * 10
        record = deliveries(hub.log_directory, runs[0].run_id)["mlflow"]  # type: ignore[arg-type]
        if fault == "answers 500":  # every batch refused: the record says what is lost
            assert record["state"] == "incomplete" and record["lost"] > 200
            assert "HTTP 500" in record["missing"] or "500" in record["missing"]
        else:
            assert record["state"] == "complete" and record["lost"] == 0
    finally:
        proxy.close()


def test_down_for_good_gives_up_then_sync_completes(
        mlflow_server: MlflowServer, linger: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLflow unreachable throughout, runs end at once; the shipper gives up after
    its linger and records what is missing; ``rlobs sync`` later ships it all, once."""
    exp = experiment_name()
    dead = MlflowSink(f"http://127.0.0.1:{free_port()}", exp)
    with rlobs.Hub(["jsonl", dead], heartbeat_s=0) as hub:
        runs, exits = _ten_runs(hub, "out")
    assert statistics.median(exits) < 1.0, exits
    assert hub.flush(60)  # settled: given up
    directory = hub.log_directory
    assert directory is not None
    record = deliveries(directory, runs[0].run_id)["mlflow"]
    assert record["state"] == "incomplete" and "not" in record["missing"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert main(["sync", str(directory), "--sinks", "mlflow"]) == 0
    c = client(mlflow_server.url)
    for run in runs:
        found = find_run(c, run.run_id)
        assert steps_of(c, found.info.run_id, "step_reward") == list(range(200))
        assert found.info.status == "FINISHED"
        assert c.get_experiment(found.info.experiment_id).name == exp  # as recorded
    assert deliveries(directory, runs[0].run_id)["mlflow"]["state"] == "complete"
    assert main(["sync", str(directory), "--sinks", "mlflow"]) == 0  # nothing to do


def test_a_refused_param_loses_only_itself(mlflow_server: MlflowServer) -> None:
    """MLflow refuses to change a param (400): that value alone is lost and counted; the
    other params and tags of the batch, the steps and the status all land."""
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, \
            hub.run("param-a", params={"lr": 0.1}) as run:
        run.step(1.0)
        assert hub.flush(60)
        run.log_params({"lr": 0.2, "gamma": 0.99, "tau": 0.005})
        run.set_tags({"phase": "two"})
        run.step(1.0)
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.info.status == "FINISHED"
    assert found.data.params["lr"] == "0.1"
    assert (found.data.params["gamma"], found.data.params["tau"]) == ("0.99", "0.005")
    assert found.data.tags["phase"] == "two"
    assert "'lr' refused" in found.data.tags["rlobs.missing"]
    record = deliveries(hub.log_directory, run.run_id)["mlflow"]  # type: ignore[arg-type]
    assert record["lost"] == 1


def test_artifact_upload_answering_500_still_ends_the_run(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """Uploads answered with 500 are retried a few times, then counted as lost; the run
    still ends FINISHED, its ``rlobs.missing`` tag naming what did not arrive."""
    proxy = FaultProxy(mlflow_server.url)
    proxy.fail(r"/artifacts/")
    report = tmp_path / "report.txt"
    report.write_text("ok")
    try:
        sink = MlflowSink(proxy.url, experiment_name())
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("upload-a") as run:
            run.step(1.0)
            run.log_artifact(report)
        assert hub.flush(90)
    finally:
        proxy.close()
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.info.status == "FINISHED"
    missing = found.data.tags["rlobs.missing"]
    assert "report.txt" in missing and "run log upload" in missing
    assert len(proxy.refused) >= 3  # retried before giving up


def _start_child(runs_dir: Path, run_id: str, env: dict[str, str], progress: Path,
                 pace_s: float = 0.0) -> subprocess.Popen[bytes]:
    progress.write_bytes(b"\xff" * 8)
    full = {**os.environ, "PYTHONPATH": str(ROOT), "RLOBS_HANDLE_SIGNALS": "1",
            "RLOBS_JSONL_DIR": str(runs_dir), **env}
    return subprocess.Popen([sys.executable, str(CHILD), run_id, str(progress), "0",
                             str(pace_s)], env=full, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _returned(progress: Path) -> int:
    """The index of the last step the child's ``run.step`` returned (-1: none yet)."""
    with progress.open("rb") as handle, mmap.mmap(handle.fileno(), 8,
                                                  access=mmap.ACCESS_READ) as shared:
        return int(struct.unpack("<q", shared[:8])[0])


def _sinks_env(server: MlflowServer) -> tuple[dict[str, str], str]:
    name = experiment_name()
    experiment_id = str(client(server.url).create_experiment(name))
    return {"RLOBS_SINKS": "jsonl,mlflow,otel", "MLFLOW_TRACKING_URI": server.url,
            "RLOBS_MLFLOW_EXPERIMENT": name, "OTEL_EXPORTER_OTLP_ENDPOINT": server.url,
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-mlflow-experiment-id={experiment_id}",
            # One single-worker server takes the metrics and the spans: allow slow answers.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30"}, experiment_id


def test_sigkill_loses_no_step_older_than_100ms(runs_dir: Path, tmp_path: Path) -> None:
    """SIGKILL of a loop stepping flat out, at some moment: every step that returned more
    than 100 ms before the kill is in its log, whole."""
    for attempt in range(3):
        run_id = f"20990101-000000-flatkill{attempt}"
        progress = tmp_path / f"progress{attempt}"
        child = _start_child(runs_dir, run_id, {"RLOBS_SINKS": "jsonl"}, progress)
        try:
            assert poll(lambda p=progress: _returned(p) > 20_000, 60)
            time.sleep(0.03 + 0.11 * attempt)  # some moment or other
            returned = _returned(progress)
            time.sleep(0.1)
            child.kill()
            child.wait(timeout=30)
        finally:
            child.kill()
        log = rlobs.read_run(runs_dir / f"{run_id}.jsonl")
        assert len(log.steps) >= returned + 1, (attempt, len(log.steps), returned)
        assert [s.step for s in log.steps] == list(range(len(log.steps)))
        assert log.end is None and log.bad_lines == ()


def test_sigkill_is_ended_killed_by_the_shipper_within_10s(
        mlflow_server: MlflowServer, runs_dir: Path, tmp_path: Path) -> None:
    """SIGKILL of a training loop: within 10 s the shipper ends the MLflow run KILLED
    holding exactly the log's steps, and the run's trace ends with an error."""
    env, experiment_id = _sinks_env(mlflow_server)
    run_id = "20990101-000000-sigkill2"
    progress = tmp_path / "progress"
    # ~250 steps/s (~1,000 MLflow values/s), which MLflow keeps up with on a slow machine:
    # what is timed is noticing the death and ending the run, not draining a backlog a
    # faster loop would build (every step still reaches MLflow: asserted below).
    child = _start_child(runs_dir, run_id, env, progress, pace_s=0.004)
    c = client(mlflow_server.url)
    try:
        assert poll(lambda: (r := find_run(c, run_id)) and r.info.status == "RUNNING"
                    and _returned(progress) > 3000, 90)
        child.kill()
        killed_at = time.monotonic()
        child.wait(timeout=30)
    finally:
        child.kill()
    assert poll(lambda: (r := find_run(c, run_id)) and r.info.status == "KILLED", 60)
    ended_s = time.monotonic() - killed_at
    assert rlobs.sync([runs_dir], timeout_s=120).complete
    log = rlobs.read_run(runs_dir / f"{run_id}.jsonl")
    assert log.end is not None and log.end.status is rlobs.RunStatus.KILLED
    assert log.end.steps == len(log.steps) and "died" in (log.end.error or "")
    found = find_run(c, run_id)
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(len(log.steps)))
    # The run's own trace, rooted at its run span (later windows of steps are traces of
    # their own, linked to it: see docs/otel.md).
    def roots() -> list[Any]:
        return [s for t in all_traces(c, experiment_id) for s in t.data.spans
                if s.parent_id is None and s.name.startswith("invoke_agent")
                and s.attributes.get("rlobs.run_id") == run_id
                and "rlobs.window" not in s.attributes]

    (root,) = poll(roots, 60) or roots()
    assert root.status.status_code.value == "ERROR"
    assert ended_s < 10.0, f"ended KILLED {ended_s:.1f}s after the kill"


def test_sigterm_mid_run_ends_killed(mlflow_server: MlflowServer, runs_dir: Path,
                                     tmp_path: Path) -> None:
    """SIGTERM: the process exits 143 at once; its MLflow run ends KILLED, every step
    of its log there once."""
    env, _ = _sinks_env(mlflow_server)
    run_id = "20990101-000000-sigterm2"
    progress = tmp_path / "progress"
    child = _start_child(runs_dir, run_id, env, progress, pace_s=0.0005)
    try:
        assert poll(lambda: _returned(progress) > 2000, 60)
        child.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        exit_s = time.monotonic() - sent
    finally:
        child.kill()
    assert rlobs.sync([runs_dir], timeout_s=120).complete
    log = rlobs.read_run(runs_dir / f"{run_id}.jsonl")
    c = client(mlflow_server.url)
    found = find_run(c, run_id)
    assert found.info.status == "KILLED"
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(len(log.steps)))
    assert exit_s < 1.0, f"exited {exit_s:.2f}s after SIGTERM"


def test_hook_error_while_ending_still_ends_run(mlflow_server: MlflowServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside ``on_run_end`` is counted at the host's boundary and the run
    still ends (the sink hosted in this process, where the fault can be injected)."""
    def broken(self: MlflowSink, event: object, conv: object) -> None:
        raise RuntimeError("final metrics broke (on purpose)")

    monkeypatch.setattr(MlflowSink, "_final", broken)
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub([sink], heartbeat_s=0, shipper=False) as hub:
        with hub.run("endfail-b") as run:
            run.step(1.0)
        errors = _mlflow(hub).errors
    assert errors == 1
    found = poll(lambda: (r := find_run(client(mlflow_server.url), run.run_id))
                 and r.info.status != "RUNNING" and r)
    assert found.info.status == "FINISHED"


def test_postgres_backend_round_trip_and_sync(mlflow_server_pg: MlflowServer) -> None:
    """On a PostgreSQL-backed server a run arrives whole and a forced sync adds nothing."""
    sink = MlflowSink(mlflow_server_pg.url, experiment_name())
    hub = rlobs.Hub(["jsonl", sink], heartbeat_s=0)
    with hub, hub.run("pg-a", params={"lr": 0.1}) as run:
        for _ in range(30):
            run.step(1.0)
    assert hub.flush(60)
    assert run.log_path is not None
    again = MlflowSink(mlflow_server_pg.url, experiment_name())
    assert rlobs.sync([run.log_path], [again], force=True).complete
    c = client(mlflow_server_pg.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "step_reward") == list(range(30))
    assert found.info.status == "FINISHED" and found.data.params["lr"] == "0.1"
