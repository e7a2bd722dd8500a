"""Serve a SAC actor's deterministic actions over HTTP, one span and one step per request.

Plain standard library (``http.server``), one request at a time. It loads a checkpoint
(saving a freshly initialised one first if the file is missing), compiles the actor on the
chosen backend and answers::

    POST /act   {"obs": [28 floats] | [[28 floats], ...]}
    →           {"action": [...], "latency_ms": 0.03, "backend": "script", "jit_compiled": true}
    GET  /health → {"backend": ..., "jit_compiled": ..., "fallback_reason": ...}

``latency_ms`` is the actor call alone (on CUDA, synchronised). Each request records an
``actor.deterministic`` span and a step (metric ``latency_ms``) on the serving run, so a
trace viewer shows served requests like training steps. Run it::

    PYTHONPATH=. python examples/serve_actor.py --checkpoint actor.pt --port 8080
    curl -s localhost:8080/act -d '{"obs": [0.0, 0.1, ...]}'
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import torch

import rlobs
from rlobs.torch import CompiledActor, SACActor, instrument

STATE_DIM = 28


def load_checkpoint(path: Path, seed: int = 0) -> SACActor:
    """The actor stored at ``path``; a seeded fresh one is saved there first if missing."""
    if not path.exists():
        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(SACActor().state_dict(), path)
    model = SACActor()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


class ActionService:
    """Turns request payloads into actions with a compiled actor; records them on ``run``."""

    def __init__(self, model: SACActor, run: rlobs.Run, backend: str | None = None) -> None:
        self.run = run
        # The server thread is not where the run was entered: give the run explicitly.
        # The weights are fixed while serving, so TorchScript may freeze them in.
        self.actor: CompiledActor = instrument(
            model, backend=backend, method="deterministic", run=run,
            example_inputs=(torch.zeros(1, STATE_DIM),),
            options={"script": {"freeze": True}})

    def act(self, payload: Any) -> dict[str, Any]:
        """One request: ``{"obs": ...}`` → action, latency and backend.

        Raises:
            ValueError: the payload is not ``{"obs": [28 numbers]}`` or a batch of them.
        """
        obs = _observations(payload)
        with torch.inference_mode():
            action, latency_ms = self.actor.timed(obs)
        self.run.step(0.0, {"latency_ms": latency_ms, "batch_size": float(obs.shape[0])})
        return {"action": action.tolist(), "latency_ms": latency_ms, **self.health()}

    def health(self) -> dict[str, Any]:
        """What serves: backend, whether it is compiled, why it fell back if it did."""
        return {"backend": self.actor.backend, "jit_compiled": self.actor.compiled,
                "fallback_reason": self.actor.fallback_reason}


def _observations(payload: Any) -> torch.Tensor:
    obs = payload.get("obs") if isinstance(payload, dict) else None
    try:
        tensor = torch.as_tensor(obs, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"'obs' must be numbers: {exc}") from None
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[1] != STATE_DIM or tensor.shape[0] == 0:
        raise ValueError(f"'obs' must hold {STATE_DIM} numbers (or rows of them), "
                         f"got shape {tuple(tensor.shape)}")
    return tensor


def make_server(service: ActionService, host: str = "127.0.0.1", port: int = 0) -> HTTPServer:
    """An HTTP server answering ``/act`` and ``/health`` with ``service``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(HTTPStatus.OK, service.health())
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": "try POST /act or GET /health"})

        def do_POST(self) -> None:
            if self.path != "/act":
                self._reply(HTTPStatus.NOT_FOUND, {"error": "try POST /act"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = service.act(json.loads(self.rfile.read(length) or b"null"))
            except ValueError as exc:  # bad JSON or observations: the client's error
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._reply(HTTPStatus.OK, body)

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
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
    parser.add_argument("--checkpoint", type=Path, default=Path("sac_actor.pt"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", default=None, help="default: RLOBS_ACTOR_BACKEND, else auto")
    args = parser.parse_args(argv)
    model = load_checkpoint(args.checkpoint)
    with rlobs.Hub.from_env() as hub, hub.run("serve-actor", params=vars(args)) as run:
        service = ActionService(model, run, args.backend)
        server = make_server(service, args.host, args.port)
        print(f"serving {service.actor!r} on http://{args.host}:{server.server_port}/act")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
