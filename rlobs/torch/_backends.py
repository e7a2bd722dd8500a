"""Building an actor's callable on one backend; any failure falls back to eager.

Every builder takes the eager module and the method name and returns a callable with the
method's signature. A builder may raise anything: :func:`build` turns the failure into a
fallback to the eager method, with the reason logged and kept for the span attributes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sysconfig
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch

from .. import environment_variables as ev
from .._exceptions import ConfigWarning
from .._log import logger

BACKENDS = ("auto", "onnx", "export", "script", "compile", "cudagraph", "eager")
"""Backend names :func:`rlobs.torch.instrument` accepts."""

DEFAULT_BACKEND = "auto"

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
# torch's deprecations name their caller (stacklevel): during a build that is this package,
# or the standard library torch called (copy/copyreg deep-copying torch's own objects).
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIR = sysconfig.get_paths()["stdlib"] + os.sep

# Outputs of a compiled callable must match eager to this tolerance (float32, reordered
# reductions in fused kernels).
RTOL = 1e-4
ATOL = 1e-5


class Built(NamedTuple):
    """A callable ready to run, and what it is."""

    fn: Callable[..., Any]
    backend: str
    """The backend that actually runs (``eager`` after a fallback)."""
    reason: str | None
    """Why the requested backend fell back to eager, or ``None``."""


def requested_backend(backend: str | None, env: Mapping[str, str] | None = None) -> str:
    """The backend to use: the argument, else ``RLOBS_ACTOR_BACKEND``, else ``auto``.

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend is not None:
        name = backend.strip().lower()
        if name not in BACKENDS:
            raise ValueError(f"unknown actor backend {backend!r}; choose from {BACKENDS}")
        return name
    raw = (os.environ if env is None else env).get(ev.RLOBS_ACTOR_BACKEND, "").strip().lower()
    if not raw:
        return DEFAULT_BACKEND
    if raw not in BACKENDS:
        warnings.warn(f"{ev.RLOBS_ACTOR_BACKEND}={raw!r} is not one of {BACKENDS}; using "
                      f"{DEFAULT_BACKEND}", ConfigWarning, stacklevel=3)
        return DEFAULT_BACKEND
    return raw


_OPTION_NAMES: Mapping[str, frozenset[str] | None] = {
    "onnx": frozenset({"max_shapes", "check_weights", "dynamo", "threads"}),
    "export": frozenset({"max_shapes", "check_weights", "cache_dir"}),
    "script": frozenset({"freeze"}),
    "compile": None,  # any torch.compile keyword; torch checks them
    "cudagraph": frozenset({"max_graphs", "warmup_calls", "clone_outputs"}),
    "eager": frozenset(),
}


def check_options(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Validate per-backend options.

    Raises:
        ValueError: an unknown backend, or an option its backend does not take.
    """
    for backend, values in options.items():
        if backend not in _OPTION_NAMES:
            raise ValueError(f"options for unknown backend {backend!r}; choose from "
                             f"{sorted(_OPTION_NAMES)}")
        known = _OPTION_NAMES[backend]
        unknown = sorted(set(values) - known) if known is not None else []
        if unknown:
            raise ValueError(f"unknown {backend} options {unknown}; known: {sorted(known or [])}")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU when it has none)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def eager_method(module: torch.nn.Module, method: str) -> Callable[..., Any]:
    """The module's own bound method.

    Raises:
        ValueError: the module has no such callable.
    """
    fn: Any = module if method == "forward" else getattr(module, method, None)
    if not callable(fn):
        raise ValueError(f"{type(module).__name__} has no method {method!r}")
    return cast("Callable[..., Any]", fn)


@contextlib.contextmanager
def torch_warnings_logged(backend: str) -> Iterator[None]:
    """Route warnings raised from torch's files (or attributed to this package's or the
    standard library's, which torch called) to the log; re-issue the others.

    torch >= 2.11 deprecates ``jit.script`` with a DeprecationWarning from its own files,
    and inductor's first compile imports a module that warns the same way. Caught here,
    deliberately and only around building, neither the user's warning filters nor a test
    suite's ``filterwarnings = error`` see them; a warning from the user's code still
    reaches the user's filters.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        _route_warnings(caught, backend)


def _route_warnings(caught: list[warnings.WarningMessage], backend: str) -> None:
    logged = set()
    for w in caught:
        if w.filename.startswith((_TORCH_DIR, _OWN_DIR, _STDLIB_DIR)):
            text = f"{w.category.__name__}: {w.message}"
            if text not in logged:
                logged.add(text)
                logger.debug("torch warned while building the actor", backend=backend,
                             warning=text)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   source=w.source)


def _script(module: torch.nn.Module, method: str,
            options: Mapping[str, Any]) -> Callable[..., Any]:
    # torch.jit.script prints its deprecation through warnings: build() routes those to
    # the log (torch_warnings_logged), so scripting stays quiet for the user.
    scripted: torch.jit.ScriptModule = torch.jit.script(module)
    if options.get("freeze"):
        # Freezing bakes the weights in as constants: faster, but later updates to the
        # module's parameters (training) no longer reach the actor. Serving only.
        if module.training:
            raise RuntimeError("freeze needs the module in eval mode; call .eval() first")
        keep = [] if method == "forward" else [method]
        scripted = torch.jit.optimize_for_inference(scripted, other_methods=keep)
    fn = scripted if method == "forward" else getattr(scripted, method, None)
    if fn is None:
        raise RuntimeError(f"method {method!r} was not scripted; decorate it with "
                           "@torch.jit.export")
    return cast("Callable[..., Any]", fn)


def _compile(module: torch.nn.Module, method: str,
             options: Mapping[str, Any]) -> Callable[..., Any]:
    # Lazy: the first call compiles (build() makes that the example's call when given).
    return torch.compile(eager_method(module, method), **options)


def _cudagraph(module: torch.nn.Module, method: str,
               options: Mapping[str, Any]) -> Callable[..., Any]:
    from ._cudagraph import CudaGraphs  # imports this module: resolve at call

    device = module_device(module)
    if device.type != "cuda":
        raise RuntimeError(f"cudagraph needs a module on a CUDA device, not {device}")
    return CudaGraphs(eager_method(module, method), device, **options)


def _for_inference(module: torch.nn.Module, backend: str) -> None:
    if module.training:
        raise RuntimeError(f"{backend} compiles for inference and needs the module in "
                           "eval mode; call .eval() first")


def _onnx(module: torch.nn.Module, method: str,
          options: Mapping[str, Any]) -> Callable[..., Any]:
    from ._onnx import OnnxShapes  # imports this module: resolve at call

    _for_inference(module, "onnx")
    device = module_device(module)
    if device.type != "cpu":
        raise RuntimeError(f"onnx runs ONNX Runtime on CPU; the module is on {device}")
    return OnnxShapes(module, method, **options)


def _export(module: torch.nn.Module, method: str,
            options: Mapping[str, Any]) -> Callable[..., Any]:
    from ._export import ExportShapes  # imports this module: resolve at call

    _for_inference(module, "export")
    return ExportShapes(module, method, **options)


def _eager(module: torch.nn.Module, method: str,
           options: Mapping[str, Any]) -> Callable[..., Any]:
    return eager_method(module, method)


_BUILDERS: Mapping[str, Callable[..., Callable[..., Any]]] = {
    "onnx": _onnx, "export": _export, "script": _script, "compile": _compile,
    "cudagraph": _cudagraph, "eager": _eager,
}


def build(module: torch.nn.Module, method: str, backend: str, *,
          example: Sequence[Any] | None = None,
          options: Mapping[str, Any] | None = None) -> Built:
    """Build ``module.method`` on ``backend`` (not ``auto``); fall back to eager on failure.

    With ``example`` inputs the built callable is run once (compiling or capturing now,
    not in the user's loop) and its outputs are checked against eager's.
    """
    eager = eager_method(module, method)
    if backend == "eager":
        return Built(eager, "eager", None)
    try:
        with torch_warnings_logged(backend):
            fn = _BUILDERS[backend](module, method, options or {})
            if example is not None:
                check_outputs(fn, eager, example)
                # A per-signature callable runs eager for inputs it could not compile:
                # at build, that is the backend failing on the example.
                per_call = getattr(fn, "fallback", None)
                if per_call:
                    raise RuntimeError(per_call)
    except Exception as exc:  # any compiler or capture failure: run eager instead
        return Built(eager, "eager", fallback(backend, exc, module, method))
    return Built(fn, backend, None)


def fallback(backend: str, exc: BaseException, module: torch.nn.Module, method: str) -> str:
    """Log a fallback to eager and return its reason (one line)."""
    reason = f"{backend} failed: {type(exc).__name__}: {one_line(str(exc))}".rstrip(": ")
    logger.warning("actor falls back to eager", module=type(module).__name__, method=method,
                   backend=backend, reason=reason)
    return reason


def one_line(text: str, limit: int = 300) -> str:
    """A multi-line error as one line: its first and last lines (TorchScript puts the
    cause last, after a source excerpt)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    short = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    return short if len(short) <= limit else short[:limit - 1] + "…"


def check_outputs(fn: Callable[..., Any], eager: Callable[..., Any],
                  example: Sequence[Any]) -> None:
    """Run both callables on ``example``.

    Raises:
        RuntimeError: the outputs differ beyond tolerance (or in structure).
    """
    with torch.inference_mode():
        got, want = fn(*example), eager(*example)
    diff = max_abs_diff(got, want)
    if diff is None:
        raise RuntimeError("outputs differ from eager in structure, shape or dtype")
    if diff > 0.0 and not _close(got, want):
        raise RuntimeError(f"outputs differ from eager (max abs diff {diff:.3g})")


def max_abs_diff(got: Any, want: Any) -> float | None:
    """Largest absolute difference between two outputs; ``None`` if they do not match up."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape \
                or got.dtype != want.dtype:
            return None
        if want.numel() == 0:
            return 0.0
        return float((got.detach().cpu().double() - want.detach().cpu().double()).abs().max())
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return None
        diffs = [max_abs_diff(g, w) for g, w in zip(got, want, strict=True)]
        return None if None in diffs else max([d for d in diffs if d is not None] or [0.0])
    return 0.0 if got == want else math.inf


def _close(got: Any, want: Any) -> bool:
    if isinstance(want, torch.Tensor):
        return bool(torch.allclose(got.cpu(), want.cpu(), rtol=RTOL, atol=ATOL))
    if isinstance(want, (tuple, list)):
        return all(_close(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)
