"""``log_result``: one call for results computed outside an agent loop.

A backtest or an evaluation produces params, a handful of numbers and maybe curves and
tables — not a stream of steps. ``log_result`` makes it one run on any sinks: params as
params, numeric results as summary metrics, other results as tags, curves and tables as
CSV files (plus a PNG per curve when matplotlib is installed) attached as artifacts.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import environment_variables as ev
from ._log import logger
from ._run import KIND_TAG, Run, current_run

if TYPE_CHECKING:
    from ._hub import Hub

Curve = Sequence[float] | Mapping[str, Sequence[float]]
"""A curve: its y values (x is the index), or named columns whose first is x."""

_SAFE = re.compile(r"[^\w.\-]+")
_CURRENT: Any = object()


def _is_number(value: Any) -> bool:
    if isinstance(value, str | bytes):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _columns(curve: Curve) -> dict[str, list[Any]]:
    if isinstance(curve, Mapping):
        return {str(k): list(v) for k, v in curve.items()}
    values = list(curve)
    return {"index": list(range(len(values))), "value": values}


def write_curve_csv(path: Path, curve: Curve) -> dict[str, list[Any]]:
    """Write a curve as CSV (one column per series); returns its columns."""
    columns = _columns(curve)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"curve {path.stem!r}: columns have different lengths {lengths}")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return columns


def write_table_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write rows (mappings) as CSV; the header is the union of their keys, in order."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(path: Path, title: str, columns: Mapping[str, Sequence[Any]]) -> bool:
    """Draw a curve to a PNG when matplotlib is installed; returns whether it did."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    from matplotlib.figure import Figure  # no pyplot: no global backend or state touched

    names = list(columns)
    x = columns[names[0]]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for name in names[1:]:
        axes.plot(x, columns[name], label=name)
    axes.set_title(title)
    axes.set_xlabel(names[0])
    if len(names) > 2:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return True


def log_result(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    results: Mapping[str, Any],
    curves: Mapping[str, Curve] | None = None,
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    tags: Mapping[str, Any] | None = None,
    hub: Hub | None = None,
    parent: Run | str | None = _CURRENT,
    directory: str | os.PathLike[str] | None = None,
    experiment: str | None = None,
    description: str | None = None,
) -> Run:
    """Log results computed outside a loop as one finished run.

    Args:
        name: the run's name.
        params: the configuration that produced the results (nested dicts flattened).
        results: numbers (anything ``float()`` accepts, bools included) become summary
            metrics; other values become tags ``result.<key>``.
        curves: named curves, each y values or ``{"x": [...], "y": [...], ...}``; each is
            written to ``<name>.csv`` and, with matplotlib, ``<name>.png``.
        tables: named lists of rows (mappings), each written to ``<name>.csv``.
        tags: extra tags.
        hub: the hub to use (default: :func:`rlobs.default_hub`).
        parent: a parent run (or id), e.g. the sweep this result belongs to; default
            :func:`rlobs.current_run` (an evaluation inside a training run nests under
            it); ``None``: a top-level run.
        directory: where the files are kept (default ``<RLOBS_JSONL_DIR>/<run_id>.files``);
            kept after the call, since sinks upload them asynchronously.
        experiment: the experiment to file the run under (default: the parent's, else
            the sinks' setting; see ``Hub.run``).
        description: a text describing the result (MLflow: the run's description).

    Returns:
        The ended run (``run.result`` holds its end).

    Raises:
        ValueError: a curve's columns differ in length.
    """
    from ._hub import default_hub

    hub = hub or default_hub()
    numbers = {k: float(v) for k, v in results.items() if _is_number(v)}
    texts = {f"result.{k}": v for k, v in results.items() if not _is_number(v)}
    if parent is _CURRENT:
        parent = current_run()
    tags = {**(tags or {}), **texts, KIND_TAG: "result"}
    with hub.run(name, params=params, tags=tags, parent=parent, experiment=experiment,
                 description=description) as run:
        run.log_summary(numbers)
        if curves or tables:
            root = Path(directory or Path(os.environ.get(ev.RLOBS_JSONL_DIR) or "rlobs-runs")
                        / f"{run.run_id}.files")
            root.mkdir(parents=True, exist_ok=True)
            for path in _write_files(root, curves or {}, tables or {}):
                run.log_artifact(path, "results")
    return run


def _write_files(root: Path, curves: Mapping[str, Curve],
                 tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Path]:
    paths: list[Path] = []
    for title, curve in curves.items():
        stem = _SAFE.sub("_", title) or "curve"
        columns = write_curve_csv(root / f"{stem}.csv", curve)
        paths.append(root / f"{stem}.csv")
        try:
            if plot_curve(root / f"{stem}.png", title, columns):
                paths.append(root / f"{stem}.png")
        except Exception as exc:  # a plotting failure must not lose the result itself
            logger.warning("could not plot curve", curve=title, error=repr(exc))
    for title, rows in tables.items():
        stem = _SAFE.sub("_", title) or "table"
        write_table_csv(root / f"{stem}.csv", rows)
        paths.append(root / f"{stem}.csv")
    return paths
