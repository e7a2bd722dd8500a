"""Shared fixtures: a clean environment per test, and real MLflow servers per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from otlp_receiver import OtlpReceiver
from servers import MlflowServer, create_pg_database, drop_pg_database

_PREFIXES = ("RLOBS_", "MLFLOW_", "OTEL_")

# Files whose assertions bound times or memory (exit within 1 s of a signal, retried within
# 2 s of a restart, RSS growth), or that load the machine themselves (8 processes × 10k
# steps into MLflow on PostgreSQL): they run alone after the rest (`make test`), so other
# tests running beside them cannot make the figures they check meaningless.
SERIAL = frozenset({"test_backpressure.py", "test_isolation.py", "test_lifecycle.py",
                    "test_load.py", "test_mlflow_faults.py", "test_multiprocess_backends.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the files in :data:`SERIAL` ``serial``."""
    for item in items:
        if item.path.name in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No rlobs/MLflow/OTel variable leaks in; JSONL goes to the test's own directory."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    runs = tmp_path / "runs"
    monkeypatch.setenv("RLOBS_JSONL_DIR", str(runs))
    monkeypatch.setenv("RLOBS_HANDLE_SIGNALS", "0")
    # Samples every 10 s would land in tests that count events; tests of them turn it on.
    monkeypatch.setenv("RLOBS_SYSTEM_METRICS_S", "0")
    return runs


@pytest.fixture
def runs_dir(clean_env: Path) -> Path:
    """The test's JSONL directory (``RLOBS_JSONL_DIR``)."""
    return clean_env


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run async tests on both anyio backends."""
    return str(request.param)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver on loopback: the spans as the exporter sent them."""
    server = OtlpReceiver()
    yield server
    server.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite backend and served artifacts."""
    workdir = tmp_path_factory.mktemp("mlflow-sqlite")
    server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on a throwaway PostgreSQL database (the compose topology)."""
    uri = create_pg_database()
    workdir = tmp_path_factory.mktemp("mlflow-pg")
    server = MlflowServer(uri, workdir).start()
    yield server
    server.stop()
    drop_pg_database(uri)


@pytest.fixture(autouse=True)
def fresh_default_hub() -> Iterator[None]:
    """Each test gets its own process-wide default hub (built from its own environment)."""
    yield
    from rlobs import _hub

    hub, _hub._default = _hub._default, None
    if hub is not None:
        hub.close()
