"""MLflow sink against a real ``mlflow server`` (SQLite): what is logged, read back."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run, poll, steps_of
from servers import MlflowServer

import rlobs
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow


def _hub(server: MlflowServer, **kwargs: object) -> rlobs.Hub:
    """A hub shipping to the server from the server's own log directory: the tests share
    one shipper, as the processes of one experiment would."""
    runs = server.workdir / "runs"
    sink = MlflowSink(server.url, experiment_name(), jsonl_dir=runs,
                      **kwargs)  # type: ignore[arg-type]
    return rlobs.Hub([JsonlSink(runs), sink], heartbeat_s=0)


def test_every_step_metric_arrives_once(mlflow_server: MlflowServer) -> None:
    """Each step's reward, cumulative reward and user metrics are stored once per step."""
    with _hub(mlflow_server) as hub, hub.run("agent-a") as run:
        for i in range(30):
            run.step(1.0, {"loss": 1.0 / (i + 1)})
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    for key in ("step_reward", "cumulative_reward", "loss"):
        assert steps_of(c, found.info.run_id, key) == list(range(30))
    assert found.data.metrics["cumulative_reward"] == 30.0


def test_run_end_sets_status_and_summary(mlflow_server: MlflowServer) -> None:
    """A finished run is FINISHED with steps, total_reward, episodes and its score; no
    bookkeeping metric (``completed``, ``dropped``, ``rejected``) clutters its charts."""
    with _hub(mlflow_server) as hub, hub.run("agent-b") as run:
        for i in range(10):
            run.step(0.5, done=i == 4)
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.info.status == "FINISHED"
    metrics = found.data.metrics
    assert (metrics["steps"], metrics["total_reward"], metrics["episodes"]) == (10.0, 5.0, 1.0)
    assert metrics["score"] == 2.5  # the mean of the last episode returns (one here)
    assert not {"completed", "dropped", "rejected", "rlobs.nonfinite_values"} & set(metrics)
    assert "rlobs.rejected" not in found.data.tags
    assert metrics["episode_return"] == 2.5 and metrics["episode_length"] == 5.0


def test_failed_run_is_failed_with_error_tag(mlflow_server: MlflowServer) -> None:
    """An exception in the run's block gives MLflow status FAILED and the error as a tag."""
    with _hub(mlflow_server) as hub, pytest.raises(ValueError), hub.run("agent-c") as run:
        run.step(1.0)
        raise ValueError("diverged")
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.info.status == "FAILED"
    assert "diverged" in found.data.tags["rlobs.error"]


def test_params_flattened_encoded_and_sanitised(mlflow_server: MlflowServer) -> None:
    """Nested params are dotted, lists JSON, bad keys sanitised with the original kept."""
    params = {"opt": {"lr": 3e-4}, "layers": [256, 256], "odd key!": "x" * 7000}
    with _hub(mlflow_server) as hub, hub.run("agent-d", params=params) as run:
        run.step(1.0)
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.data.params["opt.lr"] == "0.0003"
    assert found.data.params["layers"] == "[256, 256]"
    assert found.data.params["odd key_"].endswith("...[truncated]")
    assert len(found.data.params["odd key_"]) == 6000
    assert found.data.tags["rlobs.key.odd key_"] == "odd key!"


def test_provenance_and_user_tags(mlflow_server: MlflowServer) -> None:
    """User tags, the rlobs id and provenance (versions, host, command) are tags."""
    with _hub(mlflow_server) as hub, hub.run("agent-e", tags={"team": "rl"}) as run:
        run.step(1.0)
    assert hub.flush(60)
    tags = find_run(client(mlflow_server.url), run.run_id).data.tags
    assert tags["team"] == "rl" and tags["rlobs.run_id"] == run.run_id
    assert {"rlobs.version", "rlobs.python", "rlobs.host", "rlobs.cmd",
            "rlobs.pkg.mlflow"} <= set(tags)


def test_input_hash_is_a_tag_and_a_dataset_input(mlflow_server: MlflowServer,
                                                 tmp_path: Path) -> None:
    """A dataset hashed with ``log_input_hash`` arrives as a tag and as an MLflow dataset
    input of the run (its Datasets panel), with its context."""
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    with _hub(mlflow_server) as hub, hub.run("agent-f") as run:
        digest = run.log_input_hash(data, context="training")
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.data.tags["rlobs.input.data.csv.sha256"] == digest
    assert found.data.tags["rlobs.input.data.csv.context"] == "training"
    (dataset_input,) = client(mlflow_server.url).get_run(found.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "data.csv"
    assert digest is not None and dataset_input.dataset.digest == digest[:36]
    assert data.resolve().as_uri() in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_nonfinite_values_are_counted_not_sent(mlflow_server: MlflowServer) -> None:
    """NaN/±Inf are kept out of MLflow's history and counted in tags."""
    values = [1.0, math.nan, 2.0, math.inf, -math.inf, 3.0]
    with _hub(mlflow_server) as hub, hub.run("agent-g") as run:
        for value in values:
            run.step(0.0, {"q": value})
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert [m.value for m in sorted(c.get_metric_history(found.info.run_id, "q"),
                                    key=lambda m: m.step)] == [1.0, 2.0, 3.0]
    assert found.data.tags["rlobs.nonfinite.q"] == "nan=1 posinf=1 neginf=1 first_step=1"
    assert found.data.tags["rlobs.nonfinite_values"] == "3"
    assert "rlobs.nonfinite_values" not in found.data.metrics


def test_child_run_has_parent_run_id(mlflow_server: MlflowServer) -> None:
    """A nested run carries ``mlflow.parentRunId`` of its parent's MLflow run."""
    hub = _hub(mlflow_server)
    with hub, hub.run("sweep-1") as parent, hub.run("sweep-1-cell", parent=parent) as child:
        child.step(1.0)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    parent_run = find_run(c, parent.run_id)
    assert find_run(c, child.run_id).data.tags["mlflow.parentRunId"] == parent_run.info.run_id


def test_child_created_before_its_parent_is_nested_at_its_end(
    mlflow_server: MlflowServer,
) -> None:
    """A child whose parent reached MLflow after it (another process) is nested when it ends."""
    experiment = experiment_name()
    c = client(mlflow_server.url)
    parent_id = rlobs._hub.new_run_id()
    child_hub = rlobs.Hub([MlflowSink(mlflow_server.url, experiment)], heartbeat_s=0)
    with child_hub, child_hub.run("sweep-cell", parent=parent_id) as child:
        child.step(1.0)
        created = poll(lambda: find_run(c, child.run_id))
        assert "mlflow.parentRunId" not in created.data.tags
        parent_hub = rlobs.Hub([MlflowSink(mlflow_server.url, experiment)], heartbeat_s=0)
        with parent_hub, parent_hub.run("sweep", run_id=parent_id):
            assert poll(lambda: find_run(c, parent_id))
    assert child_hub.flush(60)
    parent_run = find_run(c, parent_id)
    assert find_run(c, child.run_id).data.tags["mlflow.parentRunId"] == parent_run.info.run_id


def test_artifacts_and_run_log_uploaded(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """User files and the run's complete JSONL log are uploaded as artifacts."""
    report = tmp_path / "report.txt"
    report.write_text("ok")
    with _hub(mlflow_server) as hub, hub.run("agent-h") as run:
        run.step(1.0)
        run.log_artifact(report, "reports")
    assert hub.flush(60)
    c = client(mlflow_server.url)
    mlflow_id = find_run(c, run.run_id).info.run_id
    assert [a.path for a in c.list_artifacts(mlflow_id, "reports")] == ["reports/report.txt"]
    local = c.download_artifacts(mlflow_id, f"rlobs/{run.run_id}.jsonl", str(tmp_path))
    assert rlobs.read_run(local).end is not None


def test_summary_and_late_params(mlflow_server: MlflowServer) -> None:
    """``log_summary`` metrics, later params and tags reach the run."""
    with _hub(mlflow_server) as hub, hub.run("agent-i") as run:
        run.step(1.0)
        run.log_summary({"eval.return": 7.5})
        run.log_params({"seed": 3})
        run.set_tags({"phase": "eval"})
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.data.metrics["eval.return"] == 7.5
    assert found.data.params["seed"] == "3" and found.data.tags["phase"] == "eval"


def test_span_percentiles_not_one_metric_per_call(mlflow_server: MlflowServer) -> None:
    """Spans become per-name p50/p95/p99/mean/count metrics, not one value per span."""
    with _hub(mlflow_server, span_interval_s=0.5) as hub, hub.run("agent-j") as run:
        for i in range(20):  # two intervals of event time: 0.5 s of spans each
            run.record_span("actor", (i // 10) * 500_000_000,
                            (i // 10) * 500_000_000 + (i + 1) * 1_000_000)
            run.step(1.0)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert found.data.metrics["span.actor.run.count"] == 20.0
    assert found.data.metrics["span.actor.run.p50_ms"] == 10.0
    assert found.data.metrics["span.actor.run.p99_ms"] == 20.0
    assert len(c.get_metric_history(found.info.run_id, "span.actor.p95_ms")) == 2


def test_downsample_every_n_keeps_episodes_full(mlflow_server: MlflowServer) -> None:
    """``every:5`` keeps steps 0,5,… plus the last; episode metrics keep every episode."""
    with _hub(mlflow_server, downsample="every:5") as hub, hub.run("agent-k") as run:
        for i in range(12):
            run.step(1.0, done=i % 3 == 2)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    mlflow_id = find_run(c, run.run_id).info.run_id
    assert steps_of(c, mlflow_id, "step_reward") == [0, 5, 10, 11]
    assert steps_of(c, mlflow_id, "episode_return") == [2, 5, 8, 11]


def test_sync_of_a_complete_run_adds_nothing(mlflow_server: MlflowServer) -> None:
    """Syncing a run MLflow already holds (forced past its delivery record) duplicates no
    value, and finds the run whatever experiment the syncing sink is set to."""
    hub = _hub(mlflow_server)
    with hub, hub.run("agent-l") as run:
        for _ in range(15):
            run.step(1.0, {"m": 2.0})
    assert hub.flush(60)
    other = MlflowSink(mlflow_server.url, experiment_name())
    assert run.log_path is not None
    assert rlobs.sync([run.log_path], [other], force=True).complete
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert steps_of(c, found.info.run_id, "m") == list(range(15))
    assert steps_of(c, found.info.run_id, "steps") == [15]
    assert found.info.status == "FINISHED"


def test_status_detail_names_server_and_counts(mlflow_server: MlflowServer) -> None:
    """``Hub.status()`` shows the server and how many values were sent."""
    with _hub(mlflow_server) as hub:
        with hub.run("agent-m") as run:
            run.step(1.0)
        assert hub.flush(60)
        status = next(s for s in hub.status() if s.name == "mlflow")
    assert status.where == "shipper" and status.available
    assert status.detail is not None and mlflow_server.url in status.detail
    assert "values sent" in status.detail


def test_embedded_default_store_and_ui_hint(runs_dir: Path) -> None:
    """Without a tracking URI, runs go to ``<jsonl dir>/mlflow.db`` and the hint says so."""
    sink = MlflowSink(experiment="embedded")
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, hub.run("emb") as run:
        run.step(1.0)
    assert hub.flush(60)
    uri = f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}"
    assert sink.viewer_hint() == f"mlflow ui --backend-store-uri {uri}"
    found = find_run(client(uri), run.run_id)
    assert found.info.status == "FINISHED"
    assert found.info.artifact_uri.startswith((runs_dir.resolve() / "mlartifacts").as_uri())


_OPENER = """
import sys, time
from pathlib import Path
from sinks.mlflow import MlflowSink
import mlflow  # imported first, so that the processes open the store at the same moment
sink = MlflowSink(jsonl_dir=sys.argv[1])
print("ready", flush=True)
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.001)
sink.open()
sink.close()
print("opened")
"""


def test_processes_creating_the_embedded_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Three processes open a new embedded store at the same moment (two shippers of one
    directory, a shipper and an in-process sink): MLflow creates its tables on first
    open and concurrent creators fail ("duplicate column name"); all three open it."""
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    outcomes = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outcomes]
    assert all("opened" in out for out, _ in outcomes)


def test_selected_by_tracking_uri_only() -> None:
    """The sink is on by default exactly when ``MLFLOW_TRACKING_URI`` is set."""
    assert MlflowSink.selected_by_default({"MLFLOW_TRACKING_URI": "http://x"})
    assert not MlflowSink.selected_by_default({})


def test_from_env_experiment_and_bad_downsample() -> None:
    """The environment sets the experiment; an invalid downsample is a ConfigError."""
    sink = MlflowSink.from_env({"MLFLOW_TRACKING_URI": "http://h:5000",
                                "RLOBS_MLFLOW_EXPERIMENT": "exp"})
    assert (sink.tracking_uri, sink.experiment) == ("http://h:5000", "exp")
    with pytest.raises(rlobs.ConfigError):
        MlflowSink.from_env({"RLOBS_MLFLOW_DOWNSAMPLE": "sometimes"})


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


def test_import_does_not_import_mlflow() -> None:
    """``import rlobs`` and loading the sink class leave mlflow unimported."""
    out = _python("import sys, rlobs; from rlobs._registry import load_sink_class; "
                  "load_sink_class('mlflow'); print('mlflow' in sys.modules)")
    assert out.strip() == "False"


def test_mlflow_missing_is_reported_with_install_hint(tmp_path: Path, runs_dir: Path) -> None:
    """Without mlflow — here and in the shipper — the sink is reported unavailable with
    the pip hint, and the run itself is unaffected."""
    fake = tmp_path / "no-mlflow" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    code = (
        "import rlobs\n"
        "with rlobs.Hub(['jsonl', 'mlflow'], heartbeat_s=0) as hub:\n"
        "    with hub.run('x') as run:\n"
        "        run.step(1.0)\n"
        "hub.flush(30)\n"
        "s = [s for s in hub.status() if s.name == 'mlflow'][0]\n"
        "print(s.available, s.detail, run.result.status)\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "RLOBS_JSONL_DIR": str(runs_dir)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, env=env)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("False mlflow is not installed: pip install \"rlobs[mlflow]\"")
    assert last.endswith("finished")


def test_keys_mlflow_refuses_are_sanitised_to_ones_it_takes(
        mlflow_server: MlflowServer) -> None:
    """Metric and param keys MLflow refuses ('.', '...', '..a', '/x', 'a//b') arrive
    under sanitised names, nothing refused or lost."""
    shapes = [".", "...", "..a", "/x", "a//b", "a/../b", ""]
    with _hub(mlflow_server) as hub, \
            hub.run("keys-a", params={k: 1 for k in shapes}) as run:
        for i in range(3):
            run.step(1.0, {k: float(i) for k in shapes})
    assert hub.flush(60)
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.info.status == "FINISHED"
    assert "rlobs.missing" not in found.data.tags
    assert {"_", "___", "_.a", "x", "a/b", "a/__/b"} <= set(found.data.metrics)
    assert {"_", "___", "_.a", "x", "a/b", "a/__/b"} <= set(found.data.params)
