"""``rlobs status``: each sink's endpoint checked now (``Sink.probe``), and the counts of
what reached each sink from the log directory."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import MlflowServer, free_port

from rlobs import Hub
from rlobs import _cli as cli
from rlobs._cli import main, shipped_counts
from rlobs._records import deliveries
from sinks.mlflow._probe import probe_tracking_uri
from sinks.otel import OtelSink


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console: one table row per sink, nothing folded."""
    monkeypatch.setenv("COLUMNS", "300")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port something listens on (what an OTLP receiver looks like to a probe)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _rows(text: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_unreachable_mlflow_and_otel_are_not_available(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens at either endpoint: both are 'no' with the reason, exit 1."""
    # The reasons on one line each, whatever the paths (the CLI's console is made once
    # per process, so another test's width may be what it has).
    monkeypatch.setattr(cli.console(), "width", 400)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["mlflow"][1] == "no" and rows["otel"][1] == "no"
    assert "cannot reach" in out and "cannot connect to 127.0.0.1:" in out


@pytest.mark.slow
def test_reachable_endpoints_are_available(
        mlflow_server: MlflowServer, listener: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A live MLflow server and a listening OTLP port: both 'yes', exit 0."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{listener}")
    assert main(["status"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["mlflow"][1] == "yes" and rows["otel"][1] == "yes"


def test_store_probes_say_what_is_wrong(tmp_path: Path, listener: int) -> None:
    """A SQLite store under a file is not writable; a fresh directory is (made on use);
    a gRPC host:port endpoint is probed as such."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "is not a directory" in (probe_tracking_uri(f"sqlite:///{blocker}/x/mlflow.db")
                                    or "")
    assert probe_tracking_uri(f"sqlite:///{tmp_path}/new/dir/mlflow.db") is None
    assert probe_tracking_uri(str(tmp_path / "mlruns")) is None
    assert OtelSink(f"127.0.0.1:{listener}", protocol="grpc").probe() is None
    assert "bad tracking URI" in (probe_tracking_uri("http://host:port") or "")


@pytest.mark.slow
def test_status_counts_what_the_shipper_delivered(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """After a run shipped to MLflow (embedded store), status shows the events delivered
    per sink — the delivery record's figure, not the status hub's own zero."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl,mlflow")
    with Hub(heartbeat_s=0, handle_signals=False) as hub:
        with hub.run("shipped") as run:
            for i in range(50):
                run.step(1.0, done=(i % 10 == 9))
        assert hub.flush(120)
    record = deliveries(runs_dir, run.run_id)
    assert record["mlflow"]["delivered"] > 50
    assert shipped_counts(runs_dir)["mlflow"] == (record["mlflow"]["delivered"], 0)
    assert main(["status"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["mlflow"][3] == f"{record['mlflow']['delivered']:,}"
    # Named on the command line, from anywhere: the same directory, the same figures.
    monkeypatch.delenv("RLOBS_JSONL_DIR")
    monkeypatch.chdir(runs_dir.parent)
    assert main(["status", runs_dir.name]) == 0
    out = capsys.readouterr().out
    assert f"RLOBS_JSONL_DIR={runs_dir.name}" in out
    assert _rows(out)["mlflow"][3] == f"{record['mlflow']['delivered']:,}"


def test_status_of_a_missing_directory_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rlobs status DIR`` with no such directory exits 2 with one line."""
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no such log directory" in err and "Traceback" not in err
