"""The serving example against the running app: cold start, checkpoint pick-up, reload,
shape validation, the benchmark endpoint, configuration by environment variables."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
import torch

import rlobs
from rlobs import Span, Step
from rlobs.testing import RecordingSink

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def serve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_serve_actor",
                                                  EXAMPLES / "serve_actor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Served(NamedTuple):
    url: str
    service: Any
    sink: RecordingSink
    hub: rlobs.Hub
    checkpoint: Path


@pytest.fixture
def served(serve: ModuleType, tmp_path: Path) -> Iterator[Served]:
    """A running action server on 127.0.0.1 inside a run; no checkpoint written yet."""
    sink = RecordingSink()
    checkpoint = tmp_path / "actor.pt"
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, \
            hub.run("serve-test") as run:
        service = serve.ActionService(checkpoint, run, backend="eager")
        server = serve.make_server(service)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(f"http://127.0.0.1:{server.server_port}", service, sink, hub,
                         checkpoint)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _request(url: str, body: Any = None, method: str | None = None,
             ) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _act(served: Served, obs: Any) -> tuple[int, dict[str, Any]]:
    return _request(served.url + "/act", {"obs": obs})


def _write(serve: ModuleType, served: Served, seed: int) -> None:
    serve.save_checkpoint(served.checkpoint, seed=seed)


def _expected(served: Served, obs: list[float]) -> torch.Tensor:
    return served.service.actor.module.deterministic(torch.tensor([obs]))


def test_cold_start_without_a_checkpoint_answers_503(served: Served) -> None:
    """Before the checkpoint exists /act, /bench and /reload answer 503; /health 200."""
    for url, body in (("/act", {"obs": [0.0] * 28}), ("/bench", None), ("/reload", {})):
        status, answer = _request(served.url + url, body)
        assert status == 503, url
        assert "no checkpoint" in answer["error"]
        assert answer["backend"] is None and answer["latency_ms"] >= 0.0
    assert _request(served.url + "/health")[0] == 200


def test_checkpoint_appearing_is_served_without_restart(serve: ModuleType,
                                                        served: Served) -> None:
    """Once the file appears the next request loads and serves it."""
    assert _act(served, [0.0] * 28)[0] == 503
    _write(serve, served, seed=0)
    obs = [0.1] * 28
    status, body = _act(served, obs)
    assert status == 200 and body["backend"] == "eager"
    torch.testing.assert_close(torch.tensor(body["action"]), _expected(served, obs))


def test_a_new_checkpoint_is_picked_up_on_the_next_request(serve: ModuleType,
                                                           served: Served) -> None:
    """Replacing the checkpoint file changes the served weights without a restart."""
    _write(serve, served, seed=0)
    obs = [0.3] * 28
    first = _act(served, obs)[1]["action"]
    _write(serve, served, seed=1)  # a new inode: os.replace of a new file
    second = _act(served, obs)[1]["action"]
    assert first != second
    torch.testing.assert_close(torch.tensor(second), _expected(served, obs))
    assert served.service.loads == 2


def test_each_request_stats_the_checkpoint_once(serve: ModuleType, served: Served,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving an unchanged checkpoint costs one os.stat per request and no reload."""
    _write(serve, served, seed=0)
    assert _act(served, [0.0] * 28)[0] == 200
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(path) == served.checkpoint:
            calls.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(serve.os, "stat", counting_stat)
    for _ in range(3):
        assert _act(served, [0.0] * 28)[0] == 200
    assert len(calls) == 3 and served.service.loads == 1


def test_unreadable_checkpoint_is_503_then_served_once_valid(serve: ModuleType,
                                                              served: Served) -> None:
    """A half-written file answers 503 with the reason; the next valid one is served."""
    served.checkpoint.write_bytes(b"not a checkpoint")
    status, body = _act(served, [0.0] * 28)
    assert status == 503 and "unreadable" in body["error"]
    _write(serve, served, seed=0)
    assert _act(served, [0.0] * 28)[0] == 200


def test_forced_reload_loads_again(serve: ModuleType, served: Served) -> None:
    """POST /reload loads the checkpoint again even when its stat looks unchanged."""
    _write(serve, served, seed=0)
    assert _act(served, [0.0] * 28)[0] == 200
    status, body = _request(served.url + "/reload", {})
    assert status == 200 and body["reloaded"] is True and body["backend"] == "eager"
    assert served.service.loads == 2


@pytest.mark.parametrize(("obs", "shape"), [([1.0, 2.0], "(1, 2)"),
                                            ([[0.0] * 27] * 2, "(2, 27)"),
                                            ([[[0.0] * 28]], "(1, 1, 28)")])
def test_bad_batch_shape_is_a_400_naming_the_shape(serve: ModuleType, served: Served,
                                                   obs: Any, shape: str) -> None:
    """A batch of the wrong shape answers 400 with the expected and the given shape."""
    _write(serve, served, seed=0)
    status, body = _act(served, obs)
    assert status == 400
    assert "expected shape (28,) or (batch, 28)" in body["error"] and shape in body["error"]
    assert body["backend"] == "eager"  # 400 is answered with what serves
    assert _act(served, [[0.0] * 28] * 3)[0] == 200


def test_non_numeric_or_missing_obs_is_a_400(serve: ModuleType, served: Served) -> None:
    """Missing 'obs', strings or invalid JSON answer 400 with the reason."""
    _write(serve, served, seed=0)
    assert _request(served.url + "/act", {"x": 1})[1]["error"].startswith("the body must")
    assert _act(served, ["a"] * 28)[0] == 400
    request = urllib.request.Request(served.url + "/act", data=b"{not json")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    with err.value:
        assert err.value.code == 400


def test_benchmark_endpoint_returns_percentiles(serve: ModuleType, served: Served) -> None:
    """GET /bench times the actor and answers p50 ≤ p95 ≤ p99 for the calls asked."""
    _write(serve, served, seed=0)
    status, body = _request(served.url + "/bench?calls=50&batch_size=4")
    assert status == 200
    assert 0.0 < body["p50_ms"] <= body["p95_ms"] <= body["p99_ms"]
    assert (body["calls"], body["batch_size"], body["backend"]) == (50, 4, "eager")
    assert _request(served.url + "/bench?calls=1")[0] == 400
    assert _request(served.url + "/bench?calls=x")[0] == 400


def test_every_response_carries_latency_and_backend(serve: ModuleType, served: Served,
                                                    ) -> None:
    """200, 400 and 404 answers all carry latency_ms and backend."""
    _write(serve, served, seed=0)
    answers = [_act(served, [0.0] * 28), _act(served, [0.0]), _request(served.url + "/nope"),
               _request(served.url + "/health"), _request(served.url + "/reload", {})]
    assert [a[0] for a in answers] == [200, 400, 404, 200, 200]
    for _, body in answers:
        assert body["backend"] == "eager" and body["latency_ms"] >= 0.0


def test_each_request_is_one_step_and_one_span(serve: ModuleType, served: Served) -> None:
    """Three requests record three steps and three actor spans on the serving run."""
    _write(serve, served, seed=0)
    for batch in (1, 2, 3):
        assert _act(served, [[0.0] * 28] * batch)[0] == 200
    assert served.hub.flush()
    spans, steps = served.sink.of_type(Span), served.sink.of_type(Step)
    assert [s.attributes["batch_size"] for s in spans] == [1, 2, 3]
    assert [s.metrics["latency_ms"] for s in steps] == pytest.approx(
        [(s.end_ns - s.start_ns) / 1e6 for s in spans])


@pytest.mark.slow
def test_backend_and_checkpoint_come_from_the_environment(serve: ModuleType,
                                                          tmp_path: Path) -> None:
    """The example's process serves $SERVE_ACTOR_CHECKPOINT on $RLOBS_ACTOR_BACKEND."""
    checkpoint = tmp_path / "elsewhere" / "model.pt"
    serve.save_checkpoint(checkpoint, seed=3)
    env = {**os.environ, "SERVE_ACTOR_CHECKPOINT": str(checkpoint),
           "RLOBS_ACTOR_BACKEND": "script", "RLOBS_SINKS": "jsonl",
           "PYTHONPATH": str(EXAMPLES.parent)}
    with subprocess.Popen([sys.executable, str(EXAMPLES / "serve_actor.py"), "--port", "0"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.rsplit(" on ", 1)[1].strip().removesuffix("/act")
            status, body = _request(url + "/act", {"obs": [0.2] * 28})
        finally:
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
    assert status == 200, line
    assert (body["backend"], body["checkpoint"]) == ("script", str(checkpoint))
    want = serve.load_checkpoint(checkpoint).deterministic(torch.tensor([[0.2] * 28]))
    torch.testing.assert_close(torch.tensor(body["action"]), want)
