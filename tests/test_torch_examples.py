"""The compiled-actor examples: an acting loop and an HTTP action server."""

from __future__ import annotations

import importlib.util
import json
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


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
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


@pytest.fixture(scope="module")
def serve() -> ModuleType:
    return _example("serve_actor")


@pytest.fixture
def served(serve: ModuleType, tmp_path: Path) -> Iterator[Served]:
    """A running action server on 127.0.0.1 inside a run."""
    sink = RecordingSink()
    model = serve.load_checkpoint(tmp_path / "actor.pt")
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, \
            hub.run("serve-test") as run:
        service = serve.ActionService(model, run, backend="script")
        server = serve.make_server(service)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(f"http://127.0.0.1:{server.server_port}", service, sink, hub)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + "/act", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_acting_loop_records_a_span_per_action() -> None:
    """The acting example records one actor span per step on the run."""
    example = _example("sac_actor")
    sink = RecordingSink()
    actor = example.make_actor("script")
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("act") as run:
        example.act(run, actor, steps=20)
        assert hub.flush()
    spans = sink.of_type(Span)
    assert [s.step for s in spans] == list(range(20))
    assert {s.attributes["backend"] for s in spans} == {"script"}


def test_acting_example_main_runs(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`examples/sac_actor.py` runs end to end on the environment's sinks."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    assert _example("sac_actor").main(["--steps", "10", "--backend", "eager"]) == 0
    assert "10 steps" in capsys.readouterr().out


def test_checkpoint_is_saved_when_missing_and_reloaded(serve: ModuleType,
                                                       tmp_path: Path) -> None:
    """A missing checkpoint is created; loading it again gives the same weights."""
    path = tmp_path / "ckpt" / "actor.pt"
    first = serve.load_checkpoint(path)
    assert path.exists()
    second = serve.load_checkpoint(path, seed=123)
    torch.testing.assert_close(first.state_dict(), second.state_dict())


def test_served_response_carries_action_latency_and_backend(
        served: Served) -> None:
    """POST /act answers the deterministic action with latency_ms, backend, jit_compiled."""
    url, service = served.url, served.service
    obs = [0.1] * 28
    status, body = _post(url, {"obs": obs})
    want = service.actor.module.deterministic(torch.tensor([obs]))
    assert status == 200
    assert (body["backend"], body["jit_compiled"]) == ("script", True)
    assert body["latency_ms"] > 0.0
    torch.testing.assert_close(torch.tensor(body["action"]), want)


def test_each_request_is_one_step_and_one_span(
        served: Served) -> None:
    """Three requests record three steps and three actor spans on the serving run."""
    for batch in (1, 2, 3):
        assert _post(served.url, {"obs": [[0.0] * 28] * batch})[0] == 200
    assert served.hub.flush()
    spans, steps = served.sink.of_type(Span), served.sink.of_type(Step)
    assert [s.attributes["batch_size"] for s in spans] == [1, 2, 3]
    assert [s.metrics["latency_ms"] for s in steps] == pytest.approx(
        [(s.end_ns - s.start_ns) / 1e6 for s in spans])


def test_bad_observation_is_a_400_and_the_server_goes_on(
        served: Served) -> None:
    """A malformed request gets 400 with the reason; the next request is served."""
    status, body = _post(served.url, {"obs": [1.0, 2.0]})
    assert status == 400 and "28 numbers" in body["error"]
    assert _post(served.url, {"obs": [0.0] * 28})[0] == 200
