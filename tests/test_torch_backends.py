"""rlobs.torch backends on CPU: equal outputs, fallbacks to eager, backend selection."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch_modules import DiffersWhenScripted, FailsWhenScripted, Small, Unscriptable

from rlobs import ConfigWarning
from rlobs.torch import CudaGraphs, SACActor, instrument


@pytest.fixture
def sac() -> SACActor:
    torch.manual_seed(0)
    return SACActor().eval()


@pytest.mark.parametrize("backend", ["eager", "script", "auto"])
@pytest.mark.parametrize("method", ["forward", "deterministic"])
def test_outputs_equal_eager(sac: SACActor, backend: str, method: str) -> None:
    """Every CPU backend returns eager's outputs for both actor methods."""
    x = torch.randn(2, 28)
    actor = instrument(sac, backend=backend, method=method, example_inputs=(x,))
    with torch.inference_mode():
        got, want = actor(x), getattr(sac, method)(x)
    assert actor.fallback_reason is None
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compile_backend_compiles_and_matches_eager() -> None:
    """torch.compile builds on CPU (a C++ compiler is needed) and matches eager."""
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(3, 4)
    actor = instrument(model, backend="compile", method="greedy", example_inputs=(x,))
    with torch.inference_mode():
        got = actor(x)
    assert (actor.backend, actor.compiled, actor.fallback_reason) == ("compile", True, None)
    torch.testing.assert_close(got, model.greedy(x), rtol=1e-4, atol=1e-5)


def test_script_backend_compiles_the_sac_actor(sac: SACActor) -> None:
    """The reference actor is scriptable: the script backend does not fall back."""
    actor = instrument(sac, backend="script", method="deterministic")
    assert (actor.backend, actor.compiled) == ("script", True)
    assert isinstance(actor.fn, torch.ScriptMethod)


def test_frozen_script_matches_eager(sac: SACActor) -> None:
    """``{"script": {"freeze": True}}`` freezes, optimises and still matches eager."""
    x = torch.randn(2, 28)
    actor = instrument(sac, backend="script", method="deterministic", example_inputs=(x,),
                       options={"script": {"freeze": True}})
    assert (actor.backend, actor.fallback_reason) == ("script", None)
    with torch.inference_mode():
        torch.testing.assert_close(actor(x), sac.deterministic(x))


def test_script_follows_weight_updates(sac: SACActor) -> None:
    """An unfrozen scripted actor shares the module's weights: training updates reach it."""
    actor = instrument(sac, backend="script", method="deterministic")
    x = torch.randn(2, 28)
    with torch.no_grad():
        sac.mean.weight.mul_(-1.0)
        torch.testing.assert_close(actor(x), sac.deterministic(x))


def test_freeze_of_a_training_module_falls_back(sac: SACActor) -> None:
    """Freezing needs eval mode: a module in training mode runs eager and says so."""
    actor = instrument(sac.train(), backend="script", options={"script": {"freeze": True}})
    assert actor.backend == "eager"
    assert "eval mode" in (actor.fallback_reason or "")


@pytest.mark.parametrize("options", [{"script": {"freez": True}}, {"jit": {}},
                                     {"cudagraph": {"graphs": 2}}])
def test_unknown_options_are_rejected(sac: SACActor, options: dict[str, dict[str, bool]],
                                      ) -> None:
    """Options for an unknown backend, or that a backend does not take, raise ValueError."""
    with pytest.raises(ValueError, match="unknown"):
        instrument(sac, backend="eager", options=options)


def test_script_deprecation_warning_does_not_escape(sac: SACActor) -> None:
    """torch's own jit.script DeprecationWarning is caught, not shown to the caller."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        instrument(sac, backend="script")
    assert [str(w.message) for w in caught] == []


def test_unscriptable_module_falls_back_to_eager() -> None:
    """A module TorchScript rejects runs eager, with the compiler's reason kept."""
    model = Unscriptable()
    actor = instrument(model, backend="script")
    x = torch.randn(2, 4)
    assert (actor.backend, actor.compiled) == ("eager", False)
    assert actor.fallback_reason is not None
    assert actor.fallback_reason.startswith("script failed: ")
    torch.testing.assert_close(actor(x), model(x))


def test_method_not_exported_falls_back_to_eager() -> None:
    """A method scripting did not compile runs eager and says to export it."""
    actor = instrument(Small(), backend="script", method="not_exported")
    assert actor.backend == "eager"
    assert "@torch.jit.export" in (actor.fallback_reason or "")


def test_outputs_differing_from_eager_fall_back() -> None:
    """A compiled callable whose outputs differ from eager's is not used."""
    actor = instrument(DiffersWhenScripted(), backend="script",
                       example_inputs=(torch.randn(2, 4),))
    assert actor.backend == "eager"
    assert "outputs differ from eager" in (actor.fallback_reason or "")


def test_failure_at_build_with_example_inputs_falls_back() -> None:
    """A compiled callable that raises on the example inputs is replaced by eager."""
    actor = instrument(FailsWhenScripted(), backend="script",
                       example_inputs=(torch.randn(2, 4),))
    assert actor.backend == "eager"
    assert "only the scripted module fails" in (actor.fallback_reason or "")


def test_failure_at_call_falls_back_without_raising() -> None:
    """A compiled call that raises in the loop returns eager's result and stays eager."""
    model = FailsWhenScripted()
    actor = instrument(model, backend="script")  # no example: the failure comes at call
    assert actor.backend == "script"
    x = torch.randn(2, 4)
    torch.testing.assert_close(actor(x), model(x))
    assert actor.backend == "eager"
    assert (actor.fallback_reason or "").endswith("(at call)")


def test_callers_own_error_propagates_and_keeps_the_backend(sac: SACActor) -> None:
    """A wrong input raises as it would eagerly; the compiled backend stays in place."""
    actor = instrument(sac, backend="script", method="deterministic")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        actor(torch.randn(2, 5))
    assert actor.backend == "script"


def test_cudagraph_on_a_cpu_module_falls_back() -> None:
    """cudagraph needs a CUDA module: on CPU it runs eager and says why."""
    actor = instrument(Small(), backend="cudagraph")
    assert actor.backend == "eager"
    assert "CUDA device" in (actor.fallback_reason or "")


def test_auto_picks_a_measured_backend(sac: SACActor) -> None:
    """auto times onnx, script and eager on the example and runs the one it chose."""
    actor = instrument(sac, backend="auto", method="deterministic",
                       example_inputs=(torch.randn(1, 28),))
    assert actor.selection is not None
    assert set(actor.selection.per_call_ms) == {"onnx", "script", "eager"}
    assert actor.backend == actor.selection.backend
    assert actor.selection.reason.startswith("fastest per call on (1, 28): ")


def test_auto_without_example_decides_on_first_call(sac: SACActor) -> None:
    """Without example inputs, auto measures on the first call's inputs."""
    actor = instrument(sac, backend="auto")
    assert (actor.backend, actor.selection) == ("auto", None)
    with torch.inference_mode():
        actor(torch.randn(4, 28))
    assert actor.selection is not None
    assert actor.backend in ("onnx", "script", "eager")
    assert "(4, 28)" in actor.selection.reason


def test_auto_skips_candidates_that_fail() -> None:
    """auto records a candidate that cannot build and chooses among the rest."""
    actor = instrument(Unscriptable(), backend="auto", candidates=("script", "eager"),
                       example_inputs=(torch.randn(2, 4),))
    assert actor.backend == "eager"
    assert actor.selection is not None
    assert set(actor.selection.failed) == {"script"}


def test_env_var_selects_the_backend(sac: SACActor, monkeypatch: pytest.MonkeyPatch) -> None:
    """RLOBS_ACTOR_BACKEND picks the backend when none is passed."""
    monkeypatch.setenv("RLOBS_ACTOR_BACKEND", "eager")
    assert instrument(sac).backend == "eager"


def test_argument_wins_over_env_var(sac: SACActor, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit backend argument wins over RLOBS_ACTOR_BACKEND."""
    monkeypatch.setenv("RLOBS_ACTOR_BACKEND", "eager")
    assert instrument(sac, backend="script").backend == "script"


def test_bad_env_var_warns_and_uses_auto(sac: SACActor,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown RLOBS_ACTOR_BACKEND warns and falls back to auto."""
    monkeypatch.setenv("RLOBS_ACTOR_BACKEND", "tensorrt")
    with pytest.warns(ConfigWarning, match="RLOBS_ACTOR_BACKEND"):
        actor = instrument(sac)
    assert actor.requested == "auto"


def test_unknown_backend_argument_is_rejected(sac: SACActor) -> None:
    """An unknown backend argument raises ValueError naming the choices."""
    with pytest.raises(ValueError, match="unknown actor backend 'jit'"):
        instrument(sac, backend="jit")


def test_unknown_method_is_rejected(sac: SACActor) -> None:
    """A method the module lacks raises ValueError at instrument time, not in the loop."""
    with pytest.raises(ValueError, match="has no method 'act'"):
        instrument(sac, method="act")


def test_cuda_graphs_run_eager_for_inputs_they_cannot_capture() -> None:
    """CudaGraphs runs CPU-tensor or keyword calls eagerly and names the reason."""
    model = Small()
    graphs = CudaGraphs(model, torch.device("cpu"))
    x = torch.randn(2, 4)
    torch.testing.assert_close(graphs(x), model(x))
    assert graphs.fallback == "cudagraph: inputs must all be CUDA tensors"
    graphs(x=x)
    assert graphs.fallback == "cudagraph: keyword arguments are not captured"
    assert graphs.captured == 0


def test_auto_skips_onnx_quietly_without_onnxruntime(sac: SACActor,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Without the rlobs[onnx] extra auto skips onnx with the reason, and warns nothing."""
    import importlib.util

    from rlobs.torch import _auto

    real = importlib.util.find_spec
    monkeypatch.setattr(_auto.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with caplog.at_level("WARNING", logger="rlobs"):
        actor = instrument(sac, method="deterministic", example_inputs=(torch.randn(1, 28),))
    assert actor.selection is not None
    assert "not installed" in actor.selection.failed["onnx"]
    assert set(actor.selection.per_call_ms) == {"script", "eager"}
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
