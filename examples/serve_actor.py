"""Serve a SAC actor's deterministic actions over HTTP, one span and one step per request.

Plain standard library (``http.server``), one request at a time, loopback by default. It
serves the checkpoint at ``--checkpoint`` (else ``$SERVE_ACTOR_CHECKPOINT``, else
``sac_actor.pt``), compiled on ``--backend`` (else ``$RLOBS_ACTOR_BACKEND``, else
``auto``)::

    POST /act     {"obs": [28 floats] | [[28 floats], ...]}
    →             {"action": [...], "latency_ms": 0.01, "backend": "onnx", ...}
    POST /reload  load the checkpoint again now (even if the file looks unchanged)
    GET  /bench?calls=200&batch_size=1
    →             {"p50_ms": ..., "p95_ms": ..., "p99_ms": ..., "calls": 200, ...}
    GET  /health  what serves: backend, checkpoint, fallback reason

Every response carries ``latency_ms`` (for ``/act`` the actor call alone, on CUDA
synchronised; otherwise the request's handling) and ``backend`` (``null`` before a model
is loaded). Until the checkpoint file exists, ``/act``, ``/bench`` and ``/reload``
answer 503. Each of those requests makes one ``os.stat`` of the checkpoint: when its modification
time, size or inode changed, the new weights are loaded and compiled before answering,
without a restart (write new checkpoints to a temporary name and ``os.replace`` them in,
so a request never reads half a file; an unreadable one is retried on the next request
while the previous weights serve on, or answered 503 if there are none). A malformed
observation batch is a 400 naming the expected shape. Each ``/act`` records an
``actor.deterministic`` span and a step (metric ``latency_ms``) on the serving run.
Run it::

    PYTHONPATH=. python examples/serve_actor.py --init --port 8080
    curl -s localhost:8080/act -d '{"obs": [0.0, 0.1, ...]}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import torch

import rlobs
from rlobs.torch import CompiledActor, SACActor, instrument

STATE_DIM = 28
CHECKPOINT_ENV = "SERVE_ACTOR_CHECKPOINT"
"""The checkpoint to serve when ``--checkpoint`` is not given."""
MAX_BENCH_CALLS = 10_000


class NotReady(Exception):
    """No checkpoint to serve yet (answered 503)."""


def save_checkpoint(path: Path, seed: int = 0) -> None:
    """Save a seeded fresh actor's weights at ``path``, atomically (temporary + rename)."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(SACActor().state_dict(), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> SACActor:
    """The actor whose weights are stored at ``path``, in eval mode."""
    model = SACActor()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _file_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_mtime_ns, st.st_size, st.st_ino


class ActionService:
    """Turns request payloads into actions with the checkpoint's compiled actor.

    Args:
        checkpoint: the file to serve; it may appear, or be replaced, while serving.
        run: the run each request's span and step are recorded on.
        backend: the actor backend (``None``: ``RLOBS_ACTOR_BACKEND``, else ``auto``).
    """

    def __init__(self, checkpoint: Path, run: rlobs.Run, backend: str | None = None) -> None:
        self.checkpoint = checkpoint
        self.run = run
        self.backend_arg = backend
        self.actor: CompiledActor | None = None
        self.loads = 0
        """Checkpoints loaded so far (the first one included)."""
        self._key: tuple[int, int, int] | None = None

    @property
    def backend(self) -> str | None:
        """The backend that serves now, ``None`` before a checkpoint is loaded."""
        return None if self.actor is None else self.actor.backend

    def refresh(self) -> CompiledActor:
        """The actor for the checkpoint as it is now: one ``os.stat``, a load if changed.

        Raises:
            NotReady: no checkpoint has been loaded and the file does not exist.
        """
        try:
            key = _file_key(os.stat(self.checkpoint))
        except FileNotFoundError:
            key = None  # removed after loading: serve what was loaded
        if key is not None and key != self._key:
            self._load(key)
        if self.actor is None:
            raise NotReady(f"no checkpoint at {self.checkpoint} yet")
        return self.actor

    def reload(self) -> dict[str, Any]:
        """Load the checkpoint again now, changed or not.

        Raises:
            NotReady: the file does not exist.
        """
        try:
            key = _file_key(os.stat(self.checkpoint))
        except FileNotFoundError:
            raise NotReady(f"no checkpoint at {self.checkpoint} to reload") from None
        self._load(key)
        return {"reloaded": True, **self.health()}

    def _load(self, key: tuple[int, int, int]) -> None:
        try:
            model = load_checkpoint(self.checkpoint)
        except Exception as exc:  # half-written or foreign file: retried on the next request
            if self.actor is None:
                raise NotReady(f"checkpoint {self.checkpoint} unreadable: "
                               f"{type(exc).__name__}: {exc}") from None
            return  # keep serving the weights loaded before
        # The server thread is not where the run was entered: give the run explicitly.
        # The weights are fixed until the next checkpoint, which gets a new actor: they
        # may be frozen in, and the per-call weight check is not needed.
        self.actor = instrument(
            model, backend=self.backend_arg, method="deterministic", run=self.run,
            example_inputs=(torch.zeros(1, STATE_DIM),),
            options={"script": {"freeze": True}, "onnx": {"check_weights": False},
                     "export": {"check_weights": False}})
        self._key = key
        self.loads += 1

    def act(self, payload: Any) -> dict[str, Any]:
        """One request: ``{"obs": ...}`` → action, latency and backend.

        Raises:
            ValueError: the payload is not ``{"obs": [28 numbers]}`` or a batch of them.
            NotReady: no checkpoint yet.
        """
        actor = self.refresh()
        obs = _observations(payload)
        with torch.inference_mode():
            action, latency_ms = actor.timed(obs)
        self.run.step(0.0, {"latency_ms": latency_ms, "batch_size": float(obs.shape[0])})
        return {"action": action.tolist(), "latency_ms": latency_ms, **self.health()}

    def bench(self, calls: int, batch_size: int) -> dict[str, Any]:
        """Time ``calls`` actor calls on a zero batch: p50, p95 and p99 in ms.

        Raises:
            ValueError: ``calls`` or ``batch_size`` out of range.
            NotReady: no checkpoint yet.
        """
        if not 2 <= calls <= MAX_BENCH_CALLS or batch_size < 1:
            raise ValueError(f"calls must be 2..{MAX_BENCH_CALLS} and batch_size >= 1, got "
                             f"calls={calls}, batch_size={batch_size}")
        actor = self.refresh()
        x = torch.zeros(batch_size, STATE_DIM)
        fn, samples = actor.fn, []
        with torch.inference_mode():
            for _ in range(10):
                fn(x)
            for _ in range(calls):
                start = time.perf_counter_ns()
                actor(x)  # the wrapper included, as /act pays it
                samples.append(time.perf_counter_ns() - start)
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return {"p50_ms": cuts[49] / 1e6, "p95_ms": cuts[94] / 1e6, "p99_ms": cuts[98] / 1e6,
                "calls": calls, "batch_size": batch_size, **self.health()}

    def health(self) -> dict[str, Any]:
        """What serves: backend, whether it is compiled, why it fell back if it did."""
        actor = self.actor
        return {"backend": self.backend, "checkpoint": str(self.checkpoint),
                "jit_compiled": actor is not None and actor.compiled,
                "fallback_reason": None if actor is None else actor.fallback_reason}


def _observations(payload: Any) -> torch.Tensor:
    obs = payload.get("obs") if isinstance(payload, dict) else None
    if obs is None:
        raise ValueError("the body must be a JSON object with an 'obs' field")
    try:
        tensor = torch.as_tensor(obs, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"'obs' must be numbers: {exc}") from None
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[1] != STATE_DIM or tensor.shape[0] == 0:
        raise ValueError(f"'obs' must hold {STATE_DIM} numbers (or rows of them): expected "
                         f"shape ({STATE_DIM},) or (batch, {STATE_DIM}), got "
                         f"{tuple(tensor.shape)}")
    return tensor


def _query_int(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def make_server(service: ActionService, host: str = "127.0.0.1", port: int = 0) -> HTTPServer:
    """An HTTP server answering ``/act``, ``/reload``, ``/bench`` and ``/health``."""

    class Handler(BaseHTTPRequestHandler):
        _start = 0

        def do_GET(self) -> None:
            self._start = time.perf_counter_ns()
            url = urlsplit(self.path)
            if url.path == "/health":
                self._answer(service.health)
            elif url.path == "/bench":
                query = parse_qs(url.query)
                self._answer(lambda: service.bench(_query_int(query, "calls", 200),
                                                   _query_int(query, "batch_size", 1)))
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": "try POST /act, POST /reload, "
                                                   "GET /bench or GET /health"})

        def do_POST(self) -> None:
            self._start = time.perf_counter_ns()
            if self.path == "/act":
                self._answer(lambda: service.act(self._json()))
            elif self.path == "/reload":
                self._answer(service.reload)
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": "try POST /act or POST /reload"})

        def _json(self) -> Any:
            length = int(self.headers.get("Content-Length", "0"))
            return json.loads(self.rfile.read(length) or b"null")  # bad JSON: ValueError

        def _answer(self, handle: Any) -> None:
            try:
                body = handle()
            except NotReady as exc:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            except ValueError as exc:  # bad JSON, observations or parameters: the client's
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            else:
                self._reply(HTTPStatus.OK, body)

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            handled_ms = (time.perf_counter_ns() - self._start) / 1e6
            body = {"latency_ms": handled_ms, "backend": service.backend, **body}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the run records every request; no per-request stderr line

    return HTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C inside a run named ``serve-actor``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path,
                        default=Path(os.environ.get(CHECKPOINT_ENV) or "sac_actor.pt"),
                        help=f"default: ${CHECKPOINT_ENV}, else sac_actor.pt")
    parser.add_argument("--init", action="store_true",
                        help="save a seeded fresh actor there first if the file is missing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", default=None, help="default: RLOBS_ACTOR_BACKEND, else auto")
    args = parser.parse_args(argv)
    if args.init and not args.checkpoint.exists():
        save_checkpoint(args.checkpoint)
    with rlobs.Hub.from_env() as hub, hub.run("serve-actor", params=vars(args)) as run:
        service = ActionService(args.checkpoint, run, args.backend)
        try:
            service.refresh()
        except NotReady as exc:
            print(f"{exc}: answering 503 until it appears")
        server = make_server(service, args.host, args.port)
        print(f"serving {service.backend} on http://{args.host}:{server.server_port}/act",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
