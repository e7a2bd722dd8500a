"""The ``export`` backend: ``torch.export`` + AOTInductor, one package per input shape.

AOTInductor compiles the exported graph to a shared library with the weights inside,
and the actor calls its runner directly (one C++ call, no Python per op). Compiling takes
tens of seconds on a small CPU, so packages are cached on disk (see :mod:`._cache`): a
restarted server with the same module code, weights and shapes loads them in
milliseconds. The runner allocates fresh outputs on every call.

Works on CPU and CUDA modules (a package is compiled for the device of its inputs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._log import logger
from ._cache import cache_dir, module_key, temporary_path
from ._static import StaticShapes, exportable, output_layout


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((tuple(a.shape), str(a.dtype), str(a.device)) for a in args)


class ExportShapes(StaticShapes):
    """One AOTInductor package per input signature, cached on disk.

    Args:
        module, method, max_shapes, check_weights: as :class:`StaticShapes`.
        cache_dir: where packages are kept (default ``RLOBS_ACTOR_CACHE_DIR``, else
            ``~/.cache/rlobs/actors``).
    """

    backend = "export"

    def __init__(self, module: torch.nn.Module, method: str, *, max_shapes: int = 8,
                 check_weights: bool = True,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(module, method, max_shapes=max_shapes, check_weights=check_weights)
        self._dir = cache_dir
        self.loaded: list[Path] = []
        """Packages loaded from the cache, not compiled by this process."""

    def compile(self, args: tuple[Any, ...]) -> Callable[..., Any]:
        """Load the package for ``args``' signature, compiling and caching it if new."""
        layout = output_layout(self._eager(*args))
        path = self.package_path(args)
        if path.exists():
            self.loaded.append(path)
        else:
            self._compile_package(args, path)
        runner = torch._inductor.aoti_load_package(str(path))
        return _call(runner.loader.run, layout)

    def package_path(self, args: tuple[Any, ...]) -> Path:
        """Where the package for inputs shaped like ``args`` is cached."""
        key = module_key(self.module, self.method, _signature(args), self.backend)
        return cache_dir(self._dir) / f"{type(self.module).__name__}-{key}.pt2"

    def _compile_package(self, args: tuple[Any, ...], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        program = torch.export.export(exportable(self.module, self.method), args)
        tmp = temporary_path(path)
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("actor package compiled", backend=self.backend, path=str(path))


def _call(run: Callable[[list[torch.Tensor]], list[torch.Tensor]],
          layout: int | None) -> Callable[..., Any]:
    """The runner's flat list call, returning what the eager method returns."""
    if layout is None:
        def call_one(*xs: torch.Tensor) -> torch.Tensor:
            return run(list(xs))[0]
        return call_one

    def call_many(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(run(list(xs)))
    return call_many
