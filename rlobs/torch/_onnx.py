"""The ``onnx`` backend: ``torch.onnx.export`` per input shape, run by ONNX Runtime.

At batch 1 a small actor's eager call is mostly framework overhead (the dispatcher, one
Python frame per module); ONNX Runtime runs the whole graph in one C++ call. Each input
signature gets its own exported graph and ``InferenceSession`` with as many intra-op
threads as torch uses, and runs through an IO binding on preallocated buffers: the input
is copied into a bound tensor, ORT writes the outputs into bound tensors, and the caller
gets copies of them (fresh tensors, as eager returns).

The TorchScript-based exporter is used first: it exports a small actor in well under a
second and quietly (its deprecation warning goes to the log); the ``torch.export``-based
one (``{"onnx": {"dynamo": True}}``, or when the first fails) takes seconds and logs
through torch's own loggers. ``onnxruntime`` and ``onnx`` are the ``rlobs[onnx]`` extra.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch

from ._static import StaticShapes, exportable, output_layout

# ONNX tensor element types of the dtypes an actor takes and returns.
_NUMPY_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                torch.int64: "int64", torch.int32: "int32", torch.bool: "bool"}


def _export_bytes(module: torch.nn.Module, args: tuple[Any, ...], dynamo: bool) -> bytes:
    names = [f"input_{i}" for i in range(len(args))]
    if not dynamo:
        try:
            buffer = io.BytesIO()
            # The legacy exporter writes to a file object too (its annotation says paths).
            torch.onnx.export(module, args, buffer, dynamo=False,  # type: ignore[arg-type]
                              input_names=names,
                              do_constant_folding=True)
            return buffer.getvalue()
        except Exception:  # the legacy exporter is going away: try the new one
            pass
    program = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                verbose=False, optimize=True)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    return bytes(model.SerializeToString())


class OnnxShapes(StaticShapes):
    """One ONNX Runtime session per input signature; see the module docstring.

    Args:
        module, method, max_shapes, check_weights: as :class:`StaticShapes`.
        dynamo: export with the ``torch.export``-based exporter.
        threads: ORT intra-op threads (default: ``torch.get_num_threads()`` at build).
    """

    backend = "onnx"

    def __init__(self, module: torch.nn.Module, method: str, *, max_shapes: int = 8,
                 check_weights: bool = True, dynamo: bool = False,
                 threads: int | None = None) -> None:
        import onnxruntime  # fail at build, not at the first call, when it is missing

        super().__init__(module, method, max_shapes=max_shapes, check_weights=check_weights)
        self._ort = onnxruntime
        self._dynamo = dynamo
        self._threads = threads

    def compile(self, args: tuple[Any, ...]) -> Callable[..., Any]:
        """Export for ``args``' shapes, open a session and bind its buffers."""
        ort = self._ort
        layout = output_layout(self._eager(*args))
        data = _export_bytes(exportable(self.module, self.method), args, self._dynamo)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: ORT's warnings are not the user's
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        run_options = ort.RunOptions()
        # The CPU provider has nothing to synchronise; skipping the call saves ~0.2 µs, and
        # passing options at all ~0.6 µs over ORT building defaults on every run.
        run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        return _bind(session, run_options, args, layout)


def _bind(session: Any, run_options: Any, args: tuple[Any, ...],
          layout: int | None) -> Callable[..., Any]:
    """A callable that copies inputs into bound buffers and returns copies of the outputs."""
    import numpy as np

    binding = session.io_binding()
    inputs = tuple(torch.empty_like(a, memory_format=torch.contiguous_format) for a in args)
    for meta, buffer in zip(session.get_inputs(), inputs, strict=True):
        binding.bind_input(meta.name, "cpu", 0, np.dtype(_NUMPY_NAMES[buffer.dtype]),
                           list(buffer.shape), buffer.data_ptr())
    outputs = []
    for meta in session.get_outputs():
        buffer = _empty_like_meta(meta)
        binding.bind_output(meta.name, "cpu", 0, np.dtype(_NUMPY_NAMES[buffer.dtype]),
                            list(buffer.shape), buffer.data_ptr())
        outputs.append(buffer)
    if len(outputs) != (1 if layout is None else layout):
        raise RuntimeError(f"the exported graph has {len(outputs)} outputs, eager returns "
                           f"{1 if layout is None else layout}")
    run, bound = session._sess.run_with_iobinding, binding._iobinding  # one C call per call
    if layout is None:
        (out,) = outputs

        def call_one(*xs: torch.Tensor) -> torch.Tensor:
            for buffer, x in zip(inputs, xs, strict=True):
                buffer.copy_(x)
            run(bound, run_options)
            return out.clone()
        return call_one
    if len(inputs) == 1 and len(outputs) == 2:  # the common actor head: one call frame less
        (buffer0,), (out0, out1) = inputs, outputs

        def call_two(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            buffer0.copy_(x)
            run(bound, run_options)
            return out0.clone(), out1.clone()
        return call_two

    def call_many(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for buffer, x in zip(inputs, xs, strict=True):
            buffer.copy_(x)
        run(bound, run_options)
        return tuple(o.clone() for o in outputs)
    return call_many


_ORT_TYPES = {"tensor(float)": torch.float32, "tensor(double)": torch.float64,
              "tensor(float16)": torch.float16, "tensor(int64)": torch.int64,
              "tensor(int32)": torch.int32, "tensor(bool)": torch.bool}


def _empty_like_meta(meta: Any) -> torch.Tensor:
    dtype = _ORT_TYPES.get(meta.type)
    shape = meta.shape
    if dtype is None or not all(isinstance(d, int) for d in shape):
        raise RuntimeError(f"output {meta.name!r} is {meta.type} of shape {shape}: not a "
                           "static shape of a supported dtype")
    return torch.empty(shape, dtype=dtype)

