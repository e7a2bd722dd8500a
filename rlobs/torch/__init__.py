"""Compiled actors with latency spans: ``rlobs.torch.instrument(actor)``.

Wrap a policy module so that each call runs on a compiled backend (``onnx``, ``export``,
``script``, ``compile``, ``cudagraph``, ``eager``, or ``auto``: measured, fastest that
works) and
records one span per call (batch size, backend, device, whether it compiled, why it fell
back) on the current run. See ``docs/actor.md``. ``rlobs.torch.log_model(actor, obs)``
records the policy as a model of the run (MLflow: a registered pytorch model).

torch is imported on first use of a name from this package, not by ``import rlobs`` nor
by ``import rlobs.torch``: the ``rlobs`` command line loads ``rlobs.torch._bench`` to
register ``rlobs bench`` and must stay quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._actor import CompiledActor, Timed, instrument
    from ._auto import CPU_CANDIDATES, CUDA_CANDIDATES, Selection
    from ._backends import BACKENDS
    from ._cudagraph import CudaGraphs
    from ._model import log_model
    from ._sac import SACActor

_EXPORTS = {
    "BACKENDS": "._backends",
    "CPU_CANDIDATES": "._auto",
    "CUDA_CANDIDATES": "._auto",
    "CompiledActor": "._actor",
    "CudaGraphs": "._cudagraph",
    "SACActor": "._sac",
    "Selection": "._auto",
    "Timed": "._actor",
    "instrument": "._actor",
    "log_model": "._model",
}

__all__ = [
    "BACKENDS",
    "CPU_CANDIDATES",
    "CUDA_CANDIDATES",
    "CompiledActor",
    "CudaGraphs",
    "SACActor",
    "Selection",
    "Timed",
    "instrument",
    "log_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
