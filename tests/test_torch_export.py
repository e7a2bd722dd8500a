"""The ``export`` backend: torch.export + AOTInductor, cached on disk across processes.

Compiling one package takes tens of seconds on a small CPU: the tests share one compiled
package (module-scoped) in one cache directory, and the restart test loads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from rlobs.torch import CompiledActor, SACActor, instrument
from rlobs.torch._cache import cache_dir
from rlobs.torch._export import ExportShapes

ROOT = Path(__file__).resolve().parent.parent

RESTARTED = """
import json, sys, torch
from rlobs.torch import SACActor, instrument
torch.manual_seed(0)
model = SACActor().eval()
actor = instrument(model, backend="export", method="deterministic",
                   example_inputs=(torch.zeros(1, 28),))
print(json.dumps({"backend": actor.backend, "reason": actor.fallback_reason,
                  "loaded": len(actor.fn.loaded)}))
"""


class Compiled(NamedTuple):
    actor: CompiledActor
    model: SACActor
    cache: Path


def _sac() -> SACActor:
    torch.manual_seed(0)
    return SACActor().eval()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compiled]:
    """The SAC actor's deterministic method compiled at batch 1 into a fresh cache."""
    cache = tmp_path_factory.mktemp("actor-cache")
    model = _sac()
    actor = instrument(model, backend="export", method="deterministic",
                       example_inputs=(torch.zeros(1, 28),),
                       options={"export": {"cache_dir": str(cache)}})
    yield Compiled(actor, model, cache)


@pytest.mark.slow
def test_export_outputs_equal_eager(compiled: Compiled) -> None:
    """The AOTInductor package returns eager's actions (documented tolerance)."""
    assert (compiled.actor.backend, compiled.actor.fallback_reason) == ("export", None)
    x = torch.randn(1, 28)
    with torch.inference_mode():
        got = compiled.actor(x)
    torch.testing.assert_close(got, compiled.model.deterministic(x), rtol=1e-4, atol=1e-5)
    assert list(compiled.cache.glob("SACActor-*.pt2"))


@pytest.mark.slow
def test_a_restarted_process_loads_the_package_without_compiling(compiled: Compiled,
                                                                 ) -> None:
    """A new process with the same code, weights and shape loads the cached package: it
    counts one load, and the cache holds the same package, not rewritten."""
    env = {**os.environ, "RLOBS_ACTOR_CACHE_DIR": str(compiled.cache),
           "PYTHONPATH": str(ROOT)}
    before = {p.name: p.stat().st_mtime_ns for p in compiled.cache.glob("*.pt2")}
    assert before  # the fixture's compile is cached
    done = subprocess.run([sys.executable, "-c", RESTARTED], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["backend"], result["reason"], result["loaded"]) == ("export", None, 1)
    assert {p.name: p.stat().st_mtime_ns for p in compiled.cache.glob("*.pt2")} == before


def test_the_cache_key_follows_weights_and_shape(tmp_path: Path) -> None:
    """Changed weights or a new shape name a different package; the same ones, the same."""
    model = _sac()
    shapes = ExportShapes(model, "deterministic", cache_dir=tmp_path)
    one, two = (torch.zeros(1, 28),), (torch.zeros(2, 28),)
    first = shapes.package_path(one)
    assert ExportShapes(_sac(), "deterministic", cache_dir=tmp_path).package_path(one) == first
    assert shapes.package_path(two) != first
    with torch.no_grad():
        model.mean.bias.add_(1.0)
    assert shapes.package_path(one) != first
    assert first.parent == tmp_path


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """RLOBS_ACTOR_CACHE_DIR sets the directory; the argument wins; default under ~."""
    assert cache_dir() == Path("~/.cache/rlobs/actors").expanduser()
    monkeypatch.setenv("RLOBS_ACTOR_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir("/elsewhere") == Path("/elsewhere")


def test_the_cache_key_takes_zero_dimensional_buffers() -> None:
    """A module with a 0-d buffer (BatchNorm's step counter) gets a key like any other."""
    from rlobs.torch._cache import module_key

    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2)).eval()
    first = module_key(model, "forward", ((1, 4),), "export")
    with torch.no_grad():
        model[1].num_batches_tracked.add_(1)
    assert module_key(model, "forward", ((1, 4),), "export") != first
