"""The ``onnx`` backend: ONNX Runtime per input shape, equal outputs, fallbacks to eager."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch_modules import Small

import rlobs
from rlobs import Span
from rlobs.testing import RecordingSink
from rlobs.torch import SACActor, instrument

pytest.importorskip("onnxruntime")

# Documented tolerance of compiled outputs against eager (docs/actor.md).
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def sac() -> SACActor:
    torch.manual_seed(0)
    return SACActor().eval()


@pytest.mark.parametrize("method", ["forward", "deterministic"])
def test_onnx_outputs_equal_eager(sac: SACActor, method: str) -> None:
    """Both actor methods run on ONNX Runtime and return eager's outputs."""
    x = torch.randn(3, 28)
    actor = instrument(sac, backend="onnx", method=method, example_inputs=(x,))
    with torch.inference_mode():
        got, want = actor(x), getattr(sac, method)(x)
    assert (actor.backend, actor.fallback_reason) == ("onnx", None)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_each_new_shape_gets_its_own_session(sac: SACActor) -> None:
    """A new batch size is exported on first sight; outputs are fresh tensors."""
    actor = instrument(sac, backend="onnx", method="deterministic")
    a, b = torch.randn(1, 28), torch.randn(5, 28)
    with torch.inference_mode():
        first = actor(a)
        kept = first.clone()
        torch.testing.assert_close(actor(b), sac.deterministic(b), rtol=RTOL, atol=ATOL)
        actor(torch.randn(1, 28))  # the bs-1 buffers are written again
    torch.testing.assert_close(first, kept)
    assert actor.fn.shapes == 2  # type: ignore[attr-defined]


def test_changed_weights_fall_back_to_eager_with_the_reason(sac: SACActor) -> None:
    """An optimizer-style in-place update is noticed: eager runs, every span says why."""
    sink = RecordingSink()
    actor = instrument(sac, backend="onnx", method="deterministic",
                       example_inputs=(torch.randn(1, 28),))
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("w"):
        with torch.no_grad():
            sac.mean.weight.mul_(-1.0)
        x = torch.randn(1, 28)
        for _ in range(2):
            torch.testing.assert_close(actor(x), sac.deterministic(x))
        assert hub.flush()
    reasons = [s.attributes.get("fallback_reason", "") for s in sink.of_type(Span)]
    assert len(reasons) == 2 and all("weights changed" in r for r in reasons)
    assert actor.backend == "eager"


def test_unchecked_weights_keep_the_exported_ones(sac: SACActor) -> None:
    """With check_weights off the exported weights serve on (fixed-weight serving)."""
    x = torch.randn(1, 28)
    actor = instrument(sac, backend="onnx", method="deterministic", example_inputs=(x,),
                       options={"onnx": {"check_weights": False}})
    with torch.inference_mode():
        before = sac.deterministic(x)
        sac.mean.weight.mul_(-1.0)
        torch.testing.assert_close(actor(x), before, rtol=RTOL, atol=ATOL)
    assert actor.backend == "onnx"


def test_keyword_call_runs_eager_and_the_span_says_so() -> None:
    """An input ONNX cannot take runs eager for that call; the next call runs compiled."""
    sink = RecordingSink()
    model = Small().eval()
    actor = instrument(model, backend="onnx", example_inputs=(torch.randn(2, 4),))
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("kw"):
        actor(x=torch.randn(2, 4))
        actor(torch.randn(2, 4))
        assert hub.flush()
    first, second = (s.attributes for s in sink.of_type(Span))
    assert (first["backend"], first["fallback_reason"]) == (
        "eager", "onnx: keyword arguments are not compiled")
    assert second["backend"] == "onnx" and "fallback_reason" not in second


def test_training_mode_module_falls_back(sac: SACActor) -> None:
    """onnx compiles for inference: a module in training mode runs eager and says so."""
    actor = instrument(sac.train(), backend="onnx")
    assert actor.backend == "eager"
    assert "eval mode" in (actor.fallback_reason or "")


def test_shape_limit_runs_new_shapes_eager(sac: SACActor) -> None:
    """Past ``max_shapes`` a new batch size runs eager; compiled ones still run."""
    actor = instrument(sac, backend="onnx", method="deterministic",
                       options={"onnx": {"max_shapes": 1}})
    with torch.inference_mode():
        for batch in (1, 2):
            x = torch.randn(batch, 28)
            torch.testing.assert_close(actor(x), sac.deterministic(x), rtol=RTOL, atol=ATOL)
    assert "1 shapes compiled already" in (actor.fn.fallback or "")  # type: ignore[attr-defined]
    assert actor.backend == "onnx"


def test_auto_measures_onnx_quietly(sac: SACActor, capfd: pytest.CaptureFixture[str]) -> None:
    """The default path tries onnx, script and eager without a warning or an output line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actor = instrument(sac, method="deterministic", example_inputs=(torch.randn(1, 28),))
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")
    assert actor.selection is not None
    assert set(actor.selection.per_call_ms) == {"onnx", "script", "eager"}
    assert actor.backend == actor.selection.backend


def test_same_shape_other_dtype_is_not_served_from_the_last_shape(sac: SACActor) -> None:
    """A float64 batch of the seen shape is not fed to the float32 session: it raises as
    eager does, and float32 calls keep running on ONNX Runtime."""
    actor = instrument(sac, backend="onnx", method="deterministic",
                       example_inputs=(torch.randn(1, 28),))
    with torch.inference_mode(), pytest.raises(RuntimeError):
        actor(torch.randn(1, 28, dtype=torch.float64))
    x = torch.randn(1, 28)
    with torch.inference_mode():
        torch.testing.assert_close(actor(x), sac.deterministic(x), rtol=RTOL, atol=ATOL)
    assert actor.backend == "onnx" and actor.fn.fallback is None  # type: ignore[attr-defined]


def test_non_tensor_input_runs_eager_with_the_reason(sac: SACActor) -> None:
    """A list where a tensor was expected goes to eager, which raises its own error."""
    actor = instrument(sac, backend="onnx", example_inputs=(torch.randn(1, 28),))
    with pytest.raises((TypeError, AttributeError)):
        actor([[0.0] * 28])
    assert actor.fn.fallback == "onnx: inputs must all be tensors on cpu"  # type: ignore[attr-defined]
    assert actor.backend == "onnx"


@pytest.mark.slow
def test_dynamo_exporter_is_an_option_and_matches_eager(sac: SACActor) -> None:
    """{"onnx": {"dynamo": True}} exports with torch.export's exporter (the legacy one's
    successor, also the fallback when it fails) and matches eager."""
    x = torch.randn(2, 28)
    actor = instrument(sac, backend="onnx", method="deterministic", example_inputs=(x,),
                       options={"onnx": {"dynamo": True}})
    assert (actor.backend, actor.fallback_reason) == ("onnx", None)
    with torch.inference_mode():
        torch.testing.assert_close(actor(x), sac.deterministic(x), rtol=RTOL, atol=ATOL)
