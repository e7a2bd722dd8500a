"""rlobs.torch on CUDA: CUDA graphs per batch size, export (AOTInductor) on CUDA, fallbacks,
synchronised spans.

Marked ``cuda``; skipped cleanly where ``torch.cuda.is_available()`` is false. Run them on
a GPU machine with ``pytest -m cuda tests/test_torch_cuda.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import rlobs
from rlobs import Span
from rlobs.testing import RecordingSink
from rlobs.torch import CudaGraphs, SACActor, instrument

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def sac() -> SACActor:
    torch.manual_seed(0)
    return SACActor().cuda().eval()


@pytest.fixture
def recorded() -> Iterator[tuple[rlobs.Hub, RecordingSink]]:
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub:
        yield hub, sink


@pytest.mark.parametrize("backend", ["eager", "script", "cudagraph", "auto"])
def test_outputs_equal_eager_on_cuda(sac: SACActor, backend: str) -> None:
    """Every CUDA backend returns eager's deterministic actions."""
    x = torch.randn(8, 28, device="cuda")
    actor = instrument(sac, backend=backend, method="deterministic", example_inputs=(x,))
    with torch.inference_mode():
        got, want = actor(x), sac.deterministic(x)
    assert actor.fallback_reason is None
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_one_graph_per_batch_size(sac: SACActor) -> None:
    """A new batch size is captured as a new graph; a seen one replays."""
    actor = instrument(sac, backend="cudagraph", method="deterministic")
    with torch.inference_mode():
        for batch in (1, 8, 1, 32, 8):
            x = torch.randn(batch, 28, device="cuda")
            torch.testing.assert_close(actor(x), sac.deterministic(x), rtol=1e-4, atol=1e-5)
    assert isinstance(actor.fn, CudaGraphs)
    assert actor.fn.captured == 3


def test_replayed_outputs_are_not_overwritten(sac: SACActor) -> None:
    """An output kept by the caller survives the next replay (outputs are cloned)."""
    actor = instrument(sac, backend="cudagraph", method="deterministic")
    a, b = torch.randn(1, 28, device="cuda"), torch.randn(1, 28, device="cuda")
    with torch.inference_mode():
        first = actor(a)
        kept = first.clone()
        actor(b)
    torch.testing.assert_close(first, kept)


def test_graph_captured_in_inference_mode_replays_outside_it(sac: SACActor) -> None:
    """A graph captured under inference_mode also serves calls made under no_grad."""
    actor = instrument(sac, backend="cudagraph", method="deterministic")
    x = torch.randn(2, 28, device="cuda")
    with torch.inference_mode():
        actor(x)
    with torch.no_grad():
        torch.testing.assert_close(actor(x), sac.deterministic(x), rtol=1e-4, atol=1e-5)
    assert actor.backend == "cudagraph"


def test_cpu_input_runs_eager_and_says_so(sac: SACActor,
                                          recorded: tuple[rlobs.Hub, RecordingSink]) -> None:
    """An input the graph cannot take runs eager; the span names the reason."""
    hub, sink = recorded
    actor = instrument(sac, backend="cudagraph", method="forward")
    with hub.run("cpu-input"), torch.inference_mode(), pytest.raises(RuntimeError):
        actor(torch.randn(1, 28))  # eager raises too: a CPU input on a CUDA module
    assert hub.flush()
    span = sink.of_type(Span)[0]
    assert span.attributes["fallback_reason"] == "cudagraph: inputs must all be CUDA tensors"


def test_graph_limit_runs_new_shapes_eager(sac: SACActor,
                                           recorded: tuple[rlobs.Hub, RecordingSink]) -> None:
    """Past ``max_graphs``, a new batch size runs eager (per call), older ones replay."""
    hub, sink = recorded
    actor = instrument(sac, backend="cudagraph", method="deterministic",
                       options={"cudagraph": {"max_graphs": 1}})
    with hub.run("limit"), torch.inference_mode():
        for batch in (1, 2, 1):
            actor(torch.randn(batch, 28, device="cuda"))
    assert hub.flush()
    backends = [s.attributes["backend"] for s in sink.of_type(Span)]
    assert backends == ["cudagraph", "eager", "cudagraph"]
    assert actor.backend == "cudagraph"


def test_cuda_spans_name_the_device(sac: SACActor,
                                    recorded: tuple[rlobs.Hub, RecordingSink]) -> None:
    """Spans of a CUDA actor carry its device and a positive, synchronised duration."""
    hub, sink = recorded
    actor = instrument(sac, backend="cudagraph", method="deterministic")
    with hub.run("device"), torch.inference_mode():
        actor(torch.randn(4, 28, device="cuda"))
    assert hub.flush()
    span = sink.of_type(Span)[0]
    assert span.attributes["device"].startswith("cuda")
    assert span.end_ns > span.start_ns


def test_auto_on_cuda_tries_cuda_graphs(sac: SACActor) -> None:
    """auto on CUDA measures cudagraph, script and eager."""
    actor = instrument(sac, backend="auto", method="deterministic",
                       example_inputs=(torch.randn(1, 28, device="cuda"),))
    assert actor.selection is not None
    assert set(actor.selection.per_call_ms) == {"cudagraph", "script", "eager"}


@pytest.mark.slow
def test_export_compiles_for_cuda_and_matches_eager(sac: SACActor, tmp_path: Path) -> None:
    """export compiles an AOTInductor package for the CUDA device and matches eager."""
    x = torch.randn(8, 28, device="cuda")
    actor = instrument(sac, backend="export", method="deterministic", example_inputs=(x,),
                       options={"export": {"cache_dir": str(tmp_path)}})
    with torch.inference_mode():
        got = actor(x)
    assert (actor.backend, actor.fallback_reason) == ("export", None)
    torch.testing.assert_close(got, sac.deterministic(x), rtol=1e-4, atol=1e-5)
    assert got.device.type == "cuda"


def test_onnx_on_a_cuda_module_falls_back(sac: SACActor) -> None:
    """onnx runs ONNX Runtime on CPU: a CUDA actor runs eager and says why."""
    actor = instrument(sac, backend="onnx")
    assert actor.backend == "eager"
    assert "ONNX Runtime on CPU" in (actor.fallback_reason or "")
