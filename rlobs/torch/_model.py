"""``rlobs.torch.log_model``: a policy as a real model for the sinks that keep models.

The training process does the torch part only: it exports the module's method with
``torch.export`` (a portable graph: loading it needs neither the module's class nor its
code) into the run's files, with the example input and the output it gives, and records
the model on the run as the tag ``rlobs.model.<name>``. The MLflow sink, in the shipper,
logs it as an MLflow model (pytorch flavour, signature and input example) and registers
it. No MLflow import and no request in the training process.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from .. import environment_variables as ev
from .._log import logger
from .._run import Run, current_run
from ._actor import CompiledActor

MODEL_TAG = "rlobs.model."
"""Prefix of the tag that records a logged model (its value: JSON, see :func:`log_model`)."""


class _Method(torch.nn.Module):
    """``module.<method>`` as a module's ``forward`` (what MLflow's pytorch flavour calls)."""

    def __init__(self, module: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, obs: torch.Tensor) -> Any:
        return getattr(self.module, self.method)(obs)


def _files_dir(run: Run) -> Path:
    log = run.log_path
    root = log.parent if log is not None else Path(os.environ.get(ev.RLOBS_JSONL_DIR)
                                                   or "rlobs-runs")
    return root / f"{run.run_id}.files"


def _save(wrapper: torch.nn.Module, example: torch.Tensor, directory: Path) -> tuple[str, str]:
    """Export to ``model.pt2``; what ``torch.export`` cannot take is saved pickled
    (``model.pt``, loadable where the module's class is importable). Returns the format
    and, for the pickle, why export failed."""
    traced = example if example.dim() < 2 or example.shape[0] > 1 else torch.cat([example] * 2)
    try:
        dynamic = ({0: torch.export.Dim.DYNAMIC},) if traced.dim() >= 2 else None
        program = torch.export.export(wrapper, (traced,), dynamic_shapes=dynamic)
        torch.export.save(program, str(directory / "model.pt2"))
        return "pt2", ""
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        logger.warning("torch.export failed; the model is saved pickled", error=why)
        torch.save(wrapper, directory / "model.pt")
        return "pickle", why


def log_model(
    model: torch.nn.Module | CompiledActor,
    example_input: torch.Tensor | None = None,
    *,
    name: str = "policy",
    run: Run | None = None,
    method: str | None = None,
    register_as: str | None = None,
    alias: str | None = None,
) -> Path:
    """Record a policy as a model of the run: sinks that keep models log it (MLflow: a
    pytorch-flavour model with signature and input example, registered when asked).

    Args:
        model: a module, or a :class:`CompiledActor` (its module, method, backend and,
            when none is given here, its example inputs).
        example_input: one input tensor (a batch of observations): the model's input
            example and, with the output it gives, its signature.
        name: the model's name in the run (``[A-Za-z0-9_.-]``).
        run: the run; default :func:`rlobs.current_run`.
        method: the method served (default ``forward``, or the actor's); it must take one
            tensor and return one.
        register_as: a registered model to add this one to as a new version.
        alias: an alias for that version (``champion``); needs ``register_as``.

    Returns:
        The directory holding the exported model, inside the run's files.

    Raises:
        ValueError: no run, no example input, a bad name, or an alias without a
            registered model.
    """
    run = run or current_run()
    if run is None or not run.active:
        raise ValueError("log_model needs an open run: pass run= or call it inside one")
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.' or '-'")
    if alias and not register_as:
        raise ValueError("alias= needs register_as=: an alias names a registered version")
    backend, fallback = "eager", None
    if isinstance(model, CompiledActor):
        backend, fallback = model.backend, model.fallback_reason
        method = method or model.method
        if example_input is None and model.example_inputs:
            example_input = model.example_inputs[0]
        model = model.module
    if not isinstance(example_input, torch.Tensor):
        raise ValueError("log_model needs example_input: one tensor of observations")
    method = method or "forward"
    wrapper = _Method(model, method).eval()
    example = example_input.detach().cpu()
    with torch.inference_mode():
        output = wrapper(example_input)
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"{type(model).__name__}.{method} returns {type(output).__name__}; "
                         "serve a method that returns one tensor (e.g. the action)")
    directory = (_files_dir(run) / "models" / name).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # A model on a GPU is exported from a CPU copy: served models load anywhere, and the
    # training module stays where it is.
    cpu = wrapper if example_input.device.type == "cpu" else _Method(
        copy.deepcopy(model).to("cpu"), method).eval()
    fmt, why = _save(cpu, example, directory)
    torch.save(example, directory / "input_example.pt")
    torch.save(output.detach().cpu(), directory / "output_example.pt")
    record = {"path": str(directory), "format": fmt, "method": method, "backend": backend,
              "register_as": register_as or "", "alias": alias or ""}
    if fallback:
        record["fallback_reason"] = fallback
    if why:
        record["export_error"] = why
    run.set_tags({MODEL_TAG + name: json.dumps(record, sort_keys=True)})
    return directory
