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
        command: the whole command line instead of the default one (it must listen on
            ``port``); ``mlflow`` as its first word is the virtualenv's.
        port: the port to listen on; default a free one.
    """

    def __init__(self, backend_uri: str, workdir: Path, *, command: list[str] | None = None,
                 port: int | None = None) -> None:
        self.backend_uri = backend_uri
        self.workdir = workdir
        self.command = command
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> MlflowServer:
        """Start and wait until ``/health`` answers."""
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin), "server", "--backend-store-uri", self.backend_uri,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--serve-artifacts", "--artifacts-destination", str(self.workdir / "artifacts")]
        if self.command is not None:
            cmd = [str(mlflow_bin) if i == 0 and word == "mlflow" else word
                   for i, word in enumerate(self.command)]
        env = dict(os.environ)
        if self.command is None:
            # MLflow's server-side jobs (GenAI scorers, evaluations) are nothing rlobs
            # uses; their runner is 8 more processes and ~17 s of CPU per start, on the
            # 2 cores the whole suite shares. The compose command keeps its own settings.
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
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
    """Create a throwaway PostgreSQL database; returns its plain ``postgresql://`` URI
    (SQLAlchemy 2.1 maps it to psycopg 3, the driver ``rlobs[all]`` installs)."""
    import psycopg

    name = f"rlobs_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(uri: str) -> None:
    """Drop a database made by :func:`create_pg_database`."""
    import psycopg

    name = uri.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a real server, for injecting faults.

    Every request is forwarded to ``target`` unless a fault is set: ``fail_paths`` (a
    regex) answers matching requests with ``status`` instead of forwarding them, and
    ``delay_s`` holds every request that long first (a slow server). Counts what it
    refused, so a test can check that every refused value was counted.
    """

    def __init__(self, target: str) -> None:
        import http.server
        import re
        import threading
        import urllib.error

        self.target = target.rstrip("/")
        self.fail_paths: re.Pattern[str] | None = None
        self.status = 500
        self.delay_s = 0.0
        self.refused: list[str] = []
        self.seen: list[float] = []  # when each request arrived (monotonic)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append(time.monotonic())
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                if proxy.fail_paths is not None and proxy.fail_paths.search(self.path):
                    proxy.refused.append(self.path)
                    payload = b'{"error_code": "INTERNAL_ERROR", "message": "injected"}'
                    self._reply(proxy.status, payload, "application/json")
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                request = urllib.request.Request(proxy.target + self.path, data=body,
                                                 headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        self._reply(resp.status, resp.read(),
                                    resp.headers.get("Content-Type", "application/json"))
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read(),
                                exc.headers.get("Content-Type", "application/json"))
                except OSError:  # the server is down: so is the connection, as without us
                    self.close_connection = True

            def _reply(self, status: int, payload: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, pattern: str | None, status: int = 500) -> None:
        """Answer requests whose path matches ``pattern`` with ``status`` (None: stop)."""
        import re

        self.fail_paths = re.compile(pattern) if pattern else None
        self.status = status

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
