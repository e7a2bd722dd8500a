"""Real servers for tests: an ``mlflow server`` process on loopback (SQLite or PostgreSQL).

Servers run with one worker: the multi-worker server stalls ~44 ms on every keep-alive
request (its socket lacks TCP_NODELAY), which would make every test slow for no reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_ADMIN_DSN = os.environ.get("RLOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """An ``mlflow server`` subprocess that can be stopped, killed and restarted on its port.

    Args:
        backend_uri: the backend store (``sqlite:///…`` or ``postgresql://…``).
        workdir: where artifacts and the log file go.
    """

    def __init__(self, backend_uri: str, workdir: Path) -> None:
        self.backend_uri = backend_uri
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        """Start and wait until ``/health`` answers."""
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin), "server", "--backend-store-uri", self.backend_uri,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--serve-artifacts", "--artifacts-destination", str(self.workdir / "artifacts")]
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy in {timeout_s}s: {self.log_path}")

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200 now."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _signal(self, sig: int) -> None:
        """Signal the server's whole process group and wait until every member is gone.

        ``mlflow server`` starts uvicorn and a job runner with its own consumers; some
        outlive the CLI process on SIGTERM, so the group is SIGKILLed after a grace time.
        """
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        _killpg(group, sig)
        deadline = time.monotonic() + 15
        while _group_alive(group) and time.monotonic() < deadline:
            self.process.poll()  # reap the leader so it does not linger as a zombie
            time.sleep(0.1)
        _killpg(group, signal.SIGKILL)
        self.process.wait(timeout=15)
        self.process = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM to the whole process group)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill hard (SIGKILL), as an outage would."""
        self._signal(signal.SIGKILL)


def _killpg(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def create_pg_database() -> str:
    """Create a throwaway PostgreSQL database; returns its SQLAlchemy URI."""
    import psycopg2

    name = f"rlobs_test_{secrets.token_hex(4)}"
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}"  # explicit driver: SQLAlchemy 2.1 defaults to psycopg 3


def drop_pg_database(uri: str) -> None:
    """Drop a database made by :func:`create_pg_database`."""
    import psycopg2

    name = uri.rsplit("/", 1)[1]
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()
