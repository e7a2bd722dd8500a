"""An actor module compiled on a chosen backend, recording one latency span per call."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from .._clock import wall_ns
from .._log import logger
from .._run import Run, current_run
from ._auto import CPU_CANDIDATES, CUDA_CANDIDATES, Selection, choose
from ._backends import (
    BACKENDS,
    Built,
    build,
    check_options,
    eager_method,
    fallback,
    module_device,
    requested_backend,
)
from ._cudagraph import CudaGraphs
from ._static import StaticShapes


class Timed(NamedTuple):
    """An actor's output and how long the call took."""

    output: Any
    latency_ms: float


def _batch_size(args: tuple[Any, ...]) -> int | None:
    if args and isinstance(args[0], torch.Tensor):
        shape = args[0].shape  # one shape read: torch attribute access is not free
        return int(shape[0]) if len(shape) >= 2 else 1
    return None


class CompiledActor:
    """Runs ``module.<method>`` on a compiled backend; see :func:`instrument`.

    Calling it runs the compiled callable. When the run (the one given, else
    :func:`rlobs.current_run`) has a sink that wants spans, the call is timed and recorded
    as a span; otherwise nothing is timed (a few hundred ns of overhead).
    """

    def __init__(self, module: torch.nn.Module, *, backend: str | None = None,
                 method: str = "forward", name: str | None = None, run: Run | None = None,
                 example_inputs: Sequence[Any] | None = None,
                 candidates: Sequence[str] | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.module = module
        self.method = method
        self.name = name or f"actor.{method}"
        self.requested = requested_backend(backend)
        self.device = module_device(module)
        self._run = run
        self._eager = eager_method(module, method)
        cuda = self.device.type == "cuda"
        self._sync: Callable[[], None] | None = (
            functools.partial(torch.cuda.synchronize, self.device) if cuda else None)
        self._candidates = _candidates(candidates, cuda)
        self._options = dict(options or {})
        check_options(self._options)
        self._lock = threading.Lock()
        self.example_inputs: tuple[Any, ...] | None = (
            None if example_inputs is None else tuple(example_inputs))
        """The inputs given, else the first call's (``rlobs.torch.log_model`` uses them)."""
        self.selection: Selection | None = None
        """What ``auto`` measured and chose (``None`` for other backends)."""
        self._install(Built(self._first_call, self.requested, None), ready=False)
        if example_inputs is not None or self.requested != "auto":
            self._build(None if example_inputs is None else tuple(example_inputs))

    # ------------------------------------------------------------------ state

    @property
    def backend(self) -> str:
        """The backend that runs now (``auto`` until it has chosen)."""
        return self._backend

    @property
    def compiled(self) -> bool:
        """Whether a compiled backend (not eager) runs now."""
        return self._backend not in ("eager", "auto")

    @property
    def fallback_reason(self) -> str | None:
        """Why the actor runs eager instead of the backend asked for, if it does."""
        return self._reason

    @property
    def fn(self) -> Callable[..., Any]:
        """The callable each call runs: no timing, no span, no fallback."""
        return self._callable

    # ------------------------------------------------------------------ calls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the actor; record a span when the run has a sink that wants spans."""
        run = self._run or current_run()
        if run is None or not run.wants_spans:
            # _call inlined: this untimed path is the ≤ 1 µs one, a call frame is 0.1 µs.
            try:
                return self._fn(*args, **kwargs)
            except Exception as exc:
                if self._fn is self._eager:
                    raise
                return self._recover(exc, args, kwargs)
        return self._timed(run, args, kwargs)[0]

    def timed(self, *args: Any, **kwargs: Any) -> Timed:
        """Run the actor and return its output with the call's latency (always timed;
        on CUDA, synchronised). Records the span as a call does."""
        run = self._run or current_run()
        output, ns = self._timed(run if run is not None and run.wants_spans else None,
                                 args, kwargs)
        return Timed(output, ns / 1e6)

    def _timed(self, run: Run | None, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[Any, int]:
        if not self._ready:
            self._first_build(args, kwargs)
        sync = self._sync
        if sync is not None:
            sync()  # work queued before the call is not the actor's
        start = wall_ns()
        try:
            output = self._call(args, kwargs)
            if sync is not None:
                sync()  # kernels are asynchronous: the call ends when the GPU is done
        except Exception as exc:
            if run is not None:
                run.record_span(self.name, start, wall_ns(), self._attrs(args),
                                error=f"{type(exc).__name__}: {exc}")
            raise
        end = wall_ns()
        if run is not None:
            run.record_span(self.name, start, end, self._attrs(args))
        return output, end - start

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self._fn(*args, **kwargs)
        except Exception as exc:
            if self._fn is self._eager:
                raise
            return self._recover(exc, args, kwargs)

    def _recover(self, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A compiled call raised: if eager runs the same call, switch to eager for good.

        If eager raises too, the error is the caller's and eager's exception propagates.
        """
        output = self._eager(*args, **kwargs)
        reason = fallback(self._backend, exc, self.module, self.method)
        with self._lock:
            self._install(Built(self._eager, "eager", f"{reason} (at call)"))
        return output

    def _attrs(self, args: tuple[Any, ...]) -> dict[str, Any]:
        size = _batch_size(args)
        attrs = ({**self._span_attrs, "batch_size": size} if size is not None
                 else dict(self._span_attrs))
        graphs = self._graphs
        if graphs is not None and graphs.fallback is not None:
            attrs.update(backend="eager", compiled=False, fallback_reason=graphs.fallback)
        return attrs

    # ------------------------------------------------------------------ building

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        self._first_build(args, kwargs)
        return self._fn(*args, **kwargs)

    def _first_build(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            if self._ready:
                return
            if self.example_inputs is None and args:
                self.example_inputs = args
            if kwargs:
                reason = "auto measures positional inputs only; the first call had keywords"
                logger.warning("actor falls back to eager", method=self.method, reason=reason)
                self._install(Built(self._eager, "eager", reason))
                return
            self._build(args)

    def _build(self, example: tuple[Any, ...] | None) -> None:
        if self.requested == "auto" and example is not None:
            built, self.selection = choose(self.module, self.method, self._candidates,
                                           example, self._options, self._sync)
        else:
            built = build(self.module, self.method, self.requested, example=example,
                          options=self._options.get(self.requested))
        self._install(built)

    def _install(self, built: Built, *, ready: bool = True) -> None:
        self._callable = built.fn
        # A per-shape callable's own entry function: one call layer less per call.
        self._fn = built.fn.entry if isinstance(built.fn, StaticShapes) else built.fn
        self._backend = built.backend
        self._reason = built.reason
        self._ready = ready
        # Per-signature callables say per call when an input ran eager.
        self._graphs = built.fn if isinstance(built.fn, (CudaGraphs, StaticShapes)) else None
        attrs: dict[str, Any] = {"backend": built.backend, "device": str(self.device),
                                 "compiled": self.compiled}
        if built.reason is not None:
            attrs["fallback_reason"] = built.reason
        self._span_attrs = attrs

    def __repr__(self) -> str:
        why = f" fallback={self._reason!r}" if self._reason else ""
        return (f"<CompiledActor {self.name!r} {type(self.module).__name__}.{self.method} "
                f"backend={self._backend} device={self.device}{why}>")


def _candidates(candidates: Sequence[str] | None, cuda: bool) -> tuple[str, ...]:
    if candidates is None:
        return CUDA_CANDIDATES if cuda else CPU_CANDIDATES
    bad = [c for c in candidates if c not in BACKENDS or c == "auto"]
    if bad:
        raise ValueError(f"unknown auto candidates {bad}; choose from {BACKENDS[1:]}")
    return tuple(candidates)


def instrument(module: torch.nn.Module, *, backend: str | None = None,
               method: str = "forward", name: str | None = None, run: Run | None = None,
               example_inputs: Sequence[Any] | None = None,
               candidates: Sequence[str] | None = None,
               options: Mapping[str, Mapping[str, Any]] | None = None) -> CompiledActor:
    """Compile an actor's method on a backend and record a latency span per call.

    Any compile or capture failure falls back to eager, with the reason logged and on
    every span (``fallback_reason``); it never raises in the calling loop. Grad mode is
    the caller's, as with the module itself: act inside ``torch.inference_mode()``.

    Args:
        module: the actor (an ``nn.Module``; put it on its device and in eval mode first).
        backend: ``auto`` (measure and pick the fastest), ``onnx``, ``export``,
            ``script``, ``compile``, ``cudagraph`` or ``eager``; ``None`` reads
            ``RLOBS_ACTOR_BACKEND`` (default ``auto``).
        method: the method to run: ``forward`` or an exported one (``deterministic``).
        name: the span name; default ``actor.<method>``.
        run: the run spans go to; default the current run at each call.
        example_inputs: positional inputs to compile, capture, check outputs against
            eager and (``auto``) measure on now; without them ``auto`` decides on the
            first call's inputs.
        candidates: the backends ``auto`` tries (default: ``onnx``, ``script``,
            ``eager`` on CPU; ``cudagraph``, ``script``, ``eager`` on CUDA).
        options: keyword options per backend: ``{"script": {"freeze": True}}`` freezes
            and optimises the scripted module for inference (faster, but later weight
            updates no longer reach it: serving only); ``{"onnx": {...}}`` takes
            ``max_shapes``, ``check_weights``, ``dynamo``, ``threads``; ``{"export":
            {...}}`` takes ``max_shapes``, ``check_weights``, ``cache_dir``;
            ``{"compile": {...}}`` is passed to
            ``torch.compile``; ``{"cudagraph": {"max_graphs": 4}}`` (also
            ``warmup_calls``, ``clone_outputs``).

    Returns:
        The :class:`CompiledActor`: call it like the method.

    Raises:
        ValueError: an unknown backend, candidate or option, or the module lacks
            ``method``.
    """
    return CompiledActor(module, backend=backend, method=method, name=name, run=run,
                         example_inputs=example_inputs, candidates=candidates,
                         options=options)
