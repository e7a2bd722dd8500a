"""Ray: Tune sweeps, actors and tasks, and RLlib algorithms, each logged as rlobs runs.

- :func:`worker_run`: inside a Ray task or actor, a child run of a parent run created on
  the driver. The parent's id travels in the task's arguments, or in the worker's
  environment set by :func:`worker_env` (``runtime_env={"env_vars": worker_env(parent)}``),
  which also carries the driver's rlobs, MLflow and OTel variables so every worker logs
  to the same sinks. Each worker writes its own run log where it runs; the log
  directory's shipper on that node ships it, and ends it ``killed`` if the worker dies.
- :class:`RlobsTuneCallback` (:mod:`rlobs.integrations._ray_tune`): a ``ray.tune``
  callback; the experiment is one parent run, each trial a child run.
- :class:`RlobsRLlibCallback` (:mod:`rlobs.integrations._ray_rllib`): an RLlib callback;
  one run per algorithm, its episodes and training iterations.

Nothing here keeps state between calls in a worker process (Ray reuses them): each
:func:`worker_run` opens a fresh run on the process's hub, which is built from the
process's own environment. ``import rlobs`` never imports ray; this module imports
``ray`` when a worker run is made, and ``ray.tune`` / ``ray.rllib`` only when their
callback is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import environment_variables as ev
from .._hub import Hub, default_hub
from .._run import Run, check_run_id

if TYPE_CHECKING:
    from ._ray_rllib import RlobsRLlibCallback
    from ._ray_tune import RlobsTuneCallback

__all__ = ["RlobsRLlibCallback", "RlobsTuneCallback", "worker_env", "worker_run"]

_CARRIED = ("RLOBS_", "MLFLOW_", "OTEL_")
"""Prefixes of the driver's variables a worker needs to log to the same sinks."""


def worker_env(parent: Run | str | None = None, *,
               env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for Ray workers, for ``runtime_env={"env_vars": ...}``.

    Args:
        parent: the parent run (or its id) that :func:`worker_run` nests under by default
            (``RLOBS_PARENT_ID``).
        env: the variables to carry (default ``os.environ``): every ``RLOBS_*``,
            ``MLFLOW_*`` and ``OTEL_*`` one. A relative ``RLOBS_JSONL_DIR`` is made
            absolute, as a worker's working directory is not the driver's.

    Raises:
        InvalidRunId: ``parent`` is not a valid run id.
    """
    source = os.environ if env is None else env
    out = {k: v for k, v in source.items() if k.startswith(_CARRIED)}
    directory = out.get(ev.RLOBS_JSONL_DIR)
    if directory and not os.path.isabs(directory):
        out[ev.RLOBS_JSONL_DIR] = os.path.abspath(directory)
    if parent is not None:
        out[ev.RLOBS_PARENT_ID] = check_run_id(parent.run_id if isinstance(parent, Run)
                                               else parent)
    return out


def worker_run(name: str, *, parent: Run | str | None = None,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
               run_id: str | None = None, hub: Hub | None = None) -> Run:
    """A child run for a Ray task or actor; enter it with ``with`` (or ``start()``/``end()``).

    Args:
        name: the run's name, e.g. ``f"rollout-{index}"``.
        parent: the parent run's id (a string travels in task arguments); default
            ``RLOBS_PARENT_ID`` from the worker's environment (:func:`worker_env`), else
            no parent.
        params: the run's params.
        tags: the run's tags; where it runs (``ray.node_id``, ``ray.job_id``,
            ``ray.actor_id`` or ``ray.task_id``, ``ray.pid``) is added.
        run_id: reuse an id (a restarted actor continuing its run).
        hub: the hub to log on; default this process's hub from its environment.

    Raises:
        InvalidRunId: ``parent`` or ``run_id`` is not a valid run id.
    """
    if isinstance(parent, Run):
        parent = parent.run_id
    parent_id = parent if parent is not None else os.environ.get(ev.RLOBS_PARENT_ID) or None
    hub = hub or default_hub()
    return hub.run(name, params=params, tags={**where_tags(), **(tags or {})},
                   parent=parent_id, run_id=run_id)


def where_tags() -> dict[str, str]:
    """Tags saying where in the Ray cluster the caller runs (empty outside Ray)."""
    import ray

    tags = {"ray.pid": str(os.getpid())}
    if not ray.is_initialized():
        return tags
    context = ray.get_runtime_context()
    for key, read in (("ray.node_id", context.get_node_id), ("ray.job_id", context.get_job_id),
                      ("ray.actor_id", context.get_actor_id),
                      ("ray.task_id", context.get_task_id)):
        try:
            value = read()
        except Exception:  # the driver has no task or actor id in some versions
            value = None
        if value:
            tags[key] = str(value)
    if "ray.actor_id" in tags:
        tags.pop("ray.task_id", None)  # an actor's current task id changes per call
    return tags


def __getattr__(name: str) -> Any:
    """The callbacks, imported on first use (``ray.tune`` and ``ray.rllib`` are heavy)."""
    if name == "RlobsTuneCallback":
        from ._ray_tune import RlobsTuneCallback

        return RlobsTuneCallback
    if name == "RlobsRLlibCallback":
        from ._ray_rllib import RlobsRLlibCallback

        return RlobsRLlibCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
