"""Callables compiled ahead of time for one static input signature each (``onnx``, ``export``).

An ahead-of-time compiler fixes the input shapes: :class:`StaticShapes` keeps one compiled
callable per signature (shapes and dtypes of the positional tensors), built on first sight.
A signature that cannot be built (keyword arguments, non-tensor inputs, a compile error,
the shape limit) runs eager for that call, with the reason readable in
:attr:`StaticShapes.fallback` right after the call, as :class:`CudaGraphs` does.

The weights are compiled in as constants. With ``check_weights`` (the default) every call
compares the parameters' version counters with those seen at build: an optimizer step or
``load_state_dict`` bumps them, and the call raises :class:`WeightsChanged`, which the
actor turns into a fallback to eager for good, with the reason on every later span.

Not thread-safe: a compiled signature may reuse its input and output buffers.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Hashable
from typing import Any

import torch

from .._log import logger
from ._backends import eager_method, module_device, one_line, torch_warnings_logged

_version = operator.attrgetter("_version")


class WeightsChanged(RuntimeError):
    """The module's weights changed after they were compiled in."""


def signature(args: tuple[Any, ...], device_type: str = "cpu") -> Hashable | None:
    """Shapes and dtypes of the positional tensors on ``device_type``; ``None`` for any
    other input."""
    key = []
    for arg in args:
        if not isinstance(arg, torch.Tensor) or arg.device.type != device_type:
            return None
        key.append((tuple(arg.shape), arg.dtype))
    return tuple(key)


def output_layout(output: Any) -> int | None:
    """How many tensors a method returns as a tuple, ``None`` for one tensor.

    Raises:
        RuntimeError: the output is neither a tensor nor a tuple/list of tensors.
    """
    if isinstance(output, torch.Tensor):
        return None
    if isinstance(output, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in output):
        return len(output)
    raise RuntimeError(f"outputs must be a tensor or a tuple of tensors, not "
                       f"{type(output).__name__}")


class MethodModule(torch.nn.Module):
    """``module.<method>`` as a module's ``forward``: what exporters trace."""

    def __init__(self, module: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return eager_method(self.inner, self.method)(*args)


def exportable(module: torch.nn.Module, method: str) -> torch.nn.Module:
    """The module whose ``forward`` is ``method`` (the module itself for ``forward``)."""
    return module if method == "forward" else MethodModule(module, method)


class StaticShapes:
    """One compiled callable per input signature; subclasses say how to compile one.

    Args:
        module: the eager module (in eval mode).
        method: the method to compile.
        max_shapes: signatures compiled at most; later new ones run eager.
        check_weights: raise :class:`WeightsChanged` when the weights change after build.
    """

    backend = "static"

    def __init__(self, module: torch.nn.Module, method: str, *, max_shapes: int = 8,
                 check_weights: bool = True) -> None:
        self.module = module
        self.method = method
        self._eager = eager_method(module, method)
        self._device_type = module_device(module).type
        self._max = max_shapes
        self._params = tuple(itertools.chain(module.parameters(), module.buffers()))
        self._versions = list(map(_version, self._params)) if check_weights else None
        self._compiled: dict[Hashable, Callable[..., Any]] = {}
        self._failed: dict[Hashable, str] = {}
        self.fallback: str | None = None
        """Why the last call ran eager, or ``None`` if it ran compiled."""
        self._last: list[Any] = [(), None, None, None]
        """Shape, dtype, device and callable of the last one-tensor call compiled."""
        self.entry = self._make_entry()
        """What a call runs; the actor calls it directly."""

    @property
    def shapes(self) -> int:
        """Signatures compiled so far."""
        return len(self._compiled)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.entry(*args, **kwargs)

    def _make_entry(self) -> Callable[..., Any]:
        """The per-call function: a closure over locals, not a method of this object (an
        instance's ``__call__`` with ``*args`` costs ~0.4 µs more, 4% of a batch-1 call)."""
        versions, params, last, general = self._versions, self._params, self._last, self._call

        def entry(*args: Any, **kwargs: Any) -> Any:
            if versions is not None and list(map(_version, params)) != versions:
                raise WeightsChanged(f"the module's weights changed after {self.backend} "
                                     "compiled them in; instrument it again to compile "
                                     "the new ones")
            if len(args) == 1 and not kwargs:
                # The acting loop's call: one tensor of the shape seen last. Three
                # attribute reads instead of building the signature.
                x = args[0]
                try:
                    if x.shape == last[0] and x.dtype is last[1] and x.device == last[2]:
                        self.fallback = None
                        return last[3](x)
                except AttributeError:  # not a tensor: the general path says why
                    pass
            return general(args, kwargs)
        return entry

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = None if kwargs else signature(args, self._device_type)
        fn = self._compiled.get(key) if key is not None else None
        if fn is None:
            fn = self._get(key, args, kwargs)
            if fn is None:
                return self._eager(*args, **kwargs)
        if len(args) == 1:
            self._last[:] = (args[0].shape, args[0].dtype, args[0].device, fn)
        self.fallback = None
        return fn(*args)

    def _get(self, key: Hashable | None, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        if key is None:
            self.fallback = (f"{self.backend}: keyword arguments are not compiled" if kwargs
                             else f"{self.backend}: inputs must all be tensors on "
                             f"{self._device_type}")
            return None
        reason = self._failed.get(key)
        if reason is None:
            shapes = [tuple(a.shape) for a in args]
            if len(self._compiled) >= self._max:
                reason = (f"{self.backend}: {self._max} shapes compiled already; {shapes} "
                          "runs eager")
            else:
                try:
                    self._compiled[key] = fn = self._compile_quietly(args)
                    logger.info("actor compiled for a new shape", backend=self.backend,
                                shapes=shapes, compiled=len(self._compiled))
                    return fn
                except Exception as exc:  # a compile failure costs one shape, not the actor
                    reason = (f"{self.backend} failed for {shapes}: {type(exc).__name__}: "
                              f"{one_line(str(exc))}")
            self._failed[key] = reason
            logger.warning("actor runs eager for this input", reason=reason)
        self.fallback = reason
        return None

    def _compile_quietly(self, args: tuple[Any, ...]) -> Callable[..., Any]:
        # Tracing wants ordinary tensors without autograd, whatever mode the caller is in.
        with torch_warnings_logged(self.backend), torch.inference_mode(False), \
                torch.no_grad():
            return self.compile(tuple(a.clone() for a in args))

    def compile(self, args: tuple[Any, ...]) -> Callable[..., Any]:
        """A callable for inputs shaped like ``args`` (positional tensors)."""
        raise NotImplementedError
