"""rlobs stays torch-free: torch loads only when rlobs.torch's API is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rlobs.torch

PUBLIC = {"BACKENDS", "CPU_CANDIDATES", "CUDA_CANDIDATES", "CompiledActor", "CudaGraphs",
          "SACActor", "Selection", "Timed", "instrument", "log_model"}


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(out.stdout.split())


def test_all_is_exactly_the_public_names() -> None:
    """`rlobs.torch.__all__` lists the public names, each of which resolves."""
    assert set(rlobs.torch.__all__) == PUBLIC
    assert all(getattr(rlobs.torch, name) is not None for name in PUBLIC)


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name rlobs.torch does not export is an AttributeError."""
    with pytest.raises(AttributeError, match="instrumentt"):
        _ = rlobs.torch.instrumentt


@pytest.mark.slow
def test_import_rlobs_imports_neither_torch_nor_rlobs_torch() -> None:
    """`import rlobs` does not import torch, nor rlobs.torch implicitly."""
    modules = _modules_after("import rlobs")
    assert "torch" not in modules and "rlobs.torch" not in modules


@pytest.mark.slow
def test_cli_parser_does_not_import_torch() -> None:
    """Building the `rlobs` CLI (which registers `bench`) does not import torch."""
    modules = _modules_after("from rlobs._cli import build_parser\nbuild_parser()")
    assert "rlobs.torch._bench" in modules and "torch" not in modules


@pytest.mark.slow
def test_torch_loads_on_first_use_of_the_api() -> None:
    """Touching `rlobs.torch.instrument` imports torch."""
    assert "torch" in _modules_after("import rlobs.torch\nrlobs.torch.instrument")
