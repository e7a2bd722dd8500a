"""The compose deployment files: valid for docker-compose, and wired as documented."""

from __future__ import annotations

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
