"""The compose deployment files: valid for docker-compose, and wired as documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "compose"
DOCKER_COMPOSE = shutil.which("docker-compose")
needs_binary = pytest.mark.skipif(DOCKER_COMPOSE is None,
                                  reason="docker-compose is not installed")


def _config(directory: Path, env_file: Path | None) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None
    args = [DOCKER_COMPOSE]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    args += ["-f", str(directory / "docker-compose.yml"), "config", "-q"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          cwd=directory)


def _services() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"])


@needs_binary
def test_compose_file_is_valid() -> None:
    """``docker-compose config -q`` accepts the file with the example environment."""
    done = _config(COMPOSE, COMPOSE / ".env.example")
    assert done.returncode == 0, done.stderr


@needs_binary
def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    """The validation is real: docker-compose rejects a misspelt key."""
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE, copy)
    text = (copy / "docker-compose.yml").read_text()
    (copy / "docker-compose.yml").write_text(text.replace("healthcheck:", "healthchek:", 1))
    done = _config(copy, copy / ".env.example")
    assert done.returncode != 0 and "healthchek" in done.stderr


@needs_binary
def test_missing_secrets_fail_fast(tmp_path: Path) -> None:
    """Without an env file the passwords are missing and compose says which."""
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE, copy)
    done = _config(copy, None)
    assert done.returncode != 0 and "PASSWORD" in done.stderr


def test_images_are_pinned() -> None:
    """Every image names an exact version (no ``latest``, no bare name)."""
    images = [s["image"] for s in _services().values() if "image" in s]
    assert images and all(":" in i and not i.endswith((":latest", ":main")) for i in images)


def test_mlflow_runs_one_worker_serving_artifacts_on_postgres() -> None:
    """MLflow: one worker, --serve-artifacts, PostgreSQL store, waits for healthy deps."""
    mlflow = _services()["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--workers=1" in command and "--serve-artifacts" in command
    assert "--backend-store-uri=postgresql://" in command and "s3://" in command
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in mlflow and "healthcheck" in _services()["postgres"]


def test_collector_sends_traces_to_jaeger_and_mlflow() -> None:
    """The collector's trace pipeline takes OTLP/HTTP and exports to both backends."""
    config = yaml.safe_load((COMPOSE / "otel-collector.yaml").read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and "http" in config["receivers"]["otlp"]["protocols"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind])
    mlflow = config["exporters"]["otlphttp/mlflow"]
    assert mlflow["traces_endpoint"] == "http://mlflow:5000/v1/traces"
    assert "x-mlflow-experiment-id" in mlflow["headers"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def _env_example() -> dict[str, str]:
    lines = (COMPOSE / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _interpolate(word: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution."""
    def value(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return env.get(name) or default
    return re.sub(r"\$\{([^}]+)\}", value, word)


def test_pg_uri_maps_to_the_driver_all_installs() -> None:
    """SQLAlchemy maps a plain ``postgresql://`` URI to psycopg 3, which ``[all]`` and the
    compose image install (not psycopg2)."""
    import sqlalchemy

    assert sqlalchemy.engine.make_url("postgresql://u@h/d").get_dialect().driver == "psycopg"
    import tomllib

    pyproject = tomllib.loads((COMPOSE.parent / "pyproject.toml").read_text())
    all_extra = " ".join(pyproject["project"]["optional-dependencies"]["all"])
    assert "psycopg[binary]" in all_extra and "psycopg2" not in all_extra
    dockerfile = (COMPOSE / "mlflow" / "Dockerfile").read_text()
    assert '"psycopg[binary]==' in dockerfile and "psycopg2" not in dockerfile.split("RUN")[1]


@pytest.mark.slow
def test_compose_mlflow_command_serves_runs_on_postgresql(tmp_path: Path) -> None:
    """The compose file's own ``mlflow server`` command line, on the local PostgreSQL (a
    fresh database), takes a run logged by rlobs. Substituted, as compose's network
    would: the ``postgres`` host is 127.0.0.1, the port a free one, the S3 artifact
    destination (MinIO) a local directory."""
    from mlflow_support import client, experiment_name, find_run
    from servers import MlflowServer, create_pg_database, drop_pg_database, free_port

    import rlobs
    from sinks.jsonl import JsonlSink
    from sinks.mlflow import MlflowSink

    admin = create_pg_database()  # postgresql://postgres@127.0.0.1:5432/rlobs_test_…
    port = free_port()
    env = {**_env_example(), "POSTGRES_USER": "postgres",
           "POSTGRES_DB": admin.rsplit("/", 1)[1],
           "MLFLOW_ALLOWED_HOSTS": f"127.0.0.1:{port}"}
    command = [_interpolate(word, env) for word in _services()["mlflow"]["command"]]
    assert any(w.startswith("--backend-store-uri=postgresql://postgres:") for w in command)
    local = {"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={port}"}
    command = [local.get(w, w).replace("@postgres:5432/", "@127.0.0.1:5432/") for w in command]
    command = [f"--artifacts-destination={tmp_path / 'artifacts'}"
               if w.startswith("--artifacts-destination=s3://") else w for w in command]
    server = MlflowServer("", tmp_path, command=command, port=port)
    try:
        server.start()
        runs = tmp_path / "runs"
        sink = MlflowSink(server.url, experiment_name(), jsonl_dir=runs)
        with rlobs.Hub([JsonlSink(runs), sink], heartbeat_s=0) as hub, \
                hub.run("compose-pg") as run:
            for _ in range(5):
                run.step(1.0)
        assert hub.flush(60)
        found = find_run(client(server.url), run.run_id)
        assert found is not None and found.info.status == "FINISHED"
        assert found.data.metrics["cumulative_reward"] == 5.0
    finally:
        server.stop()
        drop_pg_database(admin)
