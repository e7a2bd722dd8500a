"""MLflow's own tags and names, from what rlobs records about a run.

MLflow's UI fills its Source, Version (git commit), Created by and Description fields from
``mlflow.source.*``, ``mlflow.user`` and ``mlflow.note.content``; the run's ``user_id``
comes from ``mlflow.user`` given when the run is created. rlobs's provenance tags
(``rlobs.source``, ``rlobs.user``, ``rlobs.git.*``) and ``Hub.run(description=…)`` map
onto them; a tag the user sets himself (``tags={"mlflow.user": …}``) wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._mapping import MAX_TAG_VALUE, truncate

_FROM_RLOBS = (
    ("rlobs.description", "mlflow.note.content"),
    ("rlobs.user", "mlflow.user"),
    ("rlobs.source", "mlflow.source.name"),
    ("rlobs.git.commit", "mlflow.source.git.commit"),
    ("rlobs.git.branch", "mlflow.source.git.branch"),
)
SOURCE_TYPE = "LOCAL"
"""``mlflow.source.type`` of a run from a script (MLflow's ``SourceType.LOCAL``)."""


def native_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own tags derived from a run's rlobs tags (those present)."""
    out = {native: truncate(str(tags[ours]), MAX_TAG_VALUE)
           for ours, native in _FROM_RLOBS if tags.get(ours)}
    if "mlflow.source.name" in out:
        out["mlflow.source.type"] = SOURCE_TYPE
    for key, value in tags.items():  # the user's own mlflow.* tags win
        if key.startswith("mlflow.") and value:
            out[key] = truncate(str(value), MAX_TAG_VALUE)
    return out


def run_name(name: str, params: Mapping[str, Any]) -> str:
    """The MLflow run name: ``name``, with ``-seed<N>`` appended when the params hold a
    seed (``seed`` or ``….seed``) whose number the name does not already show, so seeds
    of one configuration are told apart in the runs table."""
    seed = params.get("seed")
    if seed is None:
        seed = next((v for k, v in params.items() if k.endswith(".seed")), None)
    if seed is None or isinstance(seed, bool) or not str(seed).strip():
        return name
    text = str(seed).strip()
    if re.search(rf"(?<![0-9A-Za-z]){re.escape(text)}(?![0-9])", name) or re.search(
            rf"(?<![0-9])s(eed)?[-_=]?{re.escape(text)}(?![0-9])", name):
        return name
    return f"{name}-seed{text}"
