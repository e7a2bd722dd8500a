"""Hooks that put rlobs into existing agent loops with (almost) no code change.

Each hook lives in its own module and imports its library only there, so
``import rlobs`` (and ``import rlobs.integrations``) never imports gymnasium, numpy or
Stable-Baselines3:

- :mod:`rlobs.integrations.gymnasium`: :class:`~rlobs.integrations.gymnasium.RecordEpisodes`
  (one env) and :class:`~rlobs.integrations.gymnasium.RecordVectorEpisodes` (vector envs).
- :mod:`rlobs.integrations.sb3`: :class:`~rlobs.integrations.sb3.RlobsCallback`.
- :mod:`rlobs.integrations.tasks` (re-exported here, no third-party import):
  :func:`task` — a decorator/context manager making one call one run — and
  :func:`traced` — a decorator making each (async) tool or model call a span or a step
  of the current run.
"""

from __future__ import annotations

from .tasks import Task, task, traced

__all__ = ["Task", "task", "traced"]
