"""Where compiled actors are kept on disk, and the key that says when one is stale.

A package is keyed by a hash of everything that changes what it computes: the source of
the module's classes (the module and every submodule), its weights and buffers, the
method, the input signature, the backend and the torch version. A restarted process with
the same actor finds the package and loads it instead of compiling again; any change of
code, weights or shape is a new key. Packages are written to a temporary name and moved
in place, so a concurrent reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from .. import environment_variables as ev

DEFAULT_DIR = Path("~/.cache/rlobs/actors")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The argument, else ``RLOBS_ACTOR_CACHE_DIR``, else ``~/.cache/rlobs/actors``."""
    raw = override if override is not None else os.environ.get(ev.RLOBS_ACTOR_CACHE_DIR, "")
    return Path(raw or DEFAULT_DIR).expanduser()


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL or C: its name is all there is
        return f"{cls.__module__}.{cls.__qualname__}"


def module_key(module: torch.nn.Module, method: str, signature: Any, backend: str) -> str:
    """A hex digest naming one compiled package of ``module.method`` for ``signature``."""
    digest = hashlib.sha256()
    for part in (backend, torch.__version__, method, repr(signature)):
        digest.update(part.encode() + b"\0")
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: c.__qualname__):
        digest.update(_class_source(cls).encode() + b"\0")
    for name, tensor in module.state_dict(keep_vars=False).items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        data = tensor.detach().cpu().reshape(-1)  # 0-d buffers (step counters) too
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:32]


def temporary_path(final: Path) -> Path:
    """A path beside ``final`` unique to this process, for writing before the move."""
    return final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
