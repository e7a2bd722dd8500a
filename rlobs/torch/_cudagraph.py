"""CUDA graph capture and replay: one graph per input signature (shapes, dtypes, devices).

A graph replays the kernels it recorded on fixed input and output buffers, skipping
Python, the dispatcher and kernel launch costs — what makes a small actor fast on a GPU.
A new batch size is captured on first sight; a signature that cannot be captured (CPU
inputs, keyword arguments, a capture error, the graph limit) runs eager, with the reason
readable in :attr:`CudaGraphs.fallback` right after the call.

Not thread-safe: the static buffers are shared by every call of one signature.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import torch

from .._log import logger
from ._backends import one_line


class _Graph(NamedTuple):
    graph: Any  # torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]
    output: Any


def signature(args: tuple[Any, ...]) -> Hashable | None:
    """What a graph is keyed on; ``None`` when an argument is not a CUDA tensor."""
    key = []
    for arg in args:
        if not isinstance(arg, torch.Tensor) or arg.device.type != "cuda":
            return None
        key.append((tuple(arg.shape), arg.dtype, arg.device))
    return tuple(key)


def _clone(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, (tuple, list)):
        return type(output)(_clone(o) for o in output)
    if isinstance(output, dict):
        return {key: _clone(value) for key, value in output.items()}
    return output


class CudaGraphs:
    """Replays ``fn`` from CUDA graphs captured per input signature.

    Args:
        fn: the eager callable (tensors in, tensors or tuples of tensors out).
        device: the CUDA device the module lives on.
        max_graphs: graphs kept at most (each holds its own buffers and memory pool);
            signatures beyond it run eager.
        warmup_calls: eager calls on a side stream before capture (lazy initialisation,
            cuBLAS workspaces), as the PyTorch CUDA graph recipe asks.
        clone_outputs: return copies of the output buffers. ``False`` saves a copy kernel
            per output but the next replay overwrites what the caller holds.
    """

    def __init__(self, fn: Callable[..., Any], device: torch.device, *, max_graphs: int = 16,
                 warmup_calls: int = 3, clone_outputs: bool = True) -> None:
        self._fn = fn
        self._device = device
        self._max = max_graphs
        self._warmup = warmup_calls
        self._clone = clone_outputs
        self._graphs: dict[Hashable, _Graph] = {}
        self._failed: dict[Hashable, str] = {}
        self.fallback: str | None = None
        """Why the last call ran eager, or ``None`` if it replayed a graph."""

    @property
    def captured(self) -> int:
        """Graphs captured so far."""
        return len(self._graphs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = None if kwargs else signature(args)
        graph = self._graphs.get(key) if key is not None else None
        if graph is None:
            reason = self._why_not(key, args) if key is not None else (
                "cudagraph: keyword arguments are not captured" if kwargs
                else "cudagraph: inputs must all be CUDA tensors")
            if reason is not None:
                self.fallback = reason
                return self._fn(*args, **kwargs)
            graph = self._graphs[key]
        self.fallback = None
        for static, arg in zip(graph.inputs, args, strict=True):
            static.copy_(arg)
        graph.graph.replay()
        return _clone(graph.output) if self._clone else graph.output

    def _why_not(self, key: Hashable, args: tuple[Any, ...]) -> str | None:
        """Capture a graph for ``key``; return why it cannot run one, or ``None``."""
        if key in self._failed:
            return self._failed[key]
        shapes = [tuple(a.shape) for a in args]
        if len(self._graphs) >= self._max:
            reason = f"cudagraph: {self._max} graphs captured already; {shapes} runs eager"
        else:
            try:
                self._graphs[key] = self._capture(args)
                logger.info("cuda graph captured", shapes=shapes, graphs=len(self._graphs))
                return None
            except Exception as exc:  # a capture failure costs one signature, not the actor
                reason = (f"cudagraph capture failed for {shapes}: {type(exc).__name__}: "
                          f"{one_line(str(exc))}")
        self._failed[key] = reason
        logger.warning("cuda graph not used for this input", reason=self._failed[key])
        return self._failed[key]

    def _capture(self, args: tuple[Any, ...]) -> _Graph:
        # An acting graph records no autograd: its outputs never require grad.
        with torch.no_grad():
            return self._capture_no_grad(args)

    def _capture_no_grad(self, args: tuple[Any, ...]) -> _Graph:
        # Normal tensors even when the caller is in inference mode: a later call outside it
        # may copy into them (an in-place update of an inference tensor would raise there).
        with torch.inference_mode(False):
            static = tuple(a.clone() for a in args)
        current = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self._warmup):
                self._fn(*static)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Each graph gets its own memory pool: a shared pool is only safe when graphs
        # replay in capture order, and batch sizes arrive in any order.
        with torch.cuda.graph(graph):
            output = self._fn(*static)
        return _Graph(graph, static, output)
