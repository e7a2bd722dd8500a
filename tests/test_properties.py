"""Every input a user can pass has a defined outcome (docs/core.md, "What each input
becomes"): property tests over odd values and odd keys, for every hook.

The oracle: the hook never raises (except the documented configuration errors at start);
the run log stays strictly valid JSON, readable by ``rlobs show``; every value that is not
a number is counted in ``RunEnd.rejected``, exactly; a real MLflow run (a smaller sample)
ends FINISHED with nothing lost. ``HYPOTHESIS_PROFILE=long`` runs many more examples.
"""

from __future__ import annotations

import decimal
import fractions
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlobs
from rlobs._cli import summary_rows

settings.register_profile("ci", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FLOAT_MAX = 1.7976931348623157e308


def _cyclic() -> Any:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    items: list[Any] = [1]
    items.append(items)
    return st.sampled_from([loop, items])


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.fractions(), st.decimals(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.floats(width=32).map(np.float32), st.integers(-2**62, 2**62).map(np.int64),
    st.booleans().map(np.bool_), st.floats(allow_nan=True).map(lambda v: torch.tensor(v)),
)
not_numbers = st.one_of(
    st.none(), st.text(max_size=20), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2),
    st.just(np.zeros(3)), st.just(torch.zeros(2)), st.just(torch.zeros((), device="meta")),
    _cyclic(), st.just(object()),
)
values = st.one_of(numbers, not_numbers)
keys = st.one_of(
    st.text(max_size=12), st.text(min_size=250, max_size=300), st.sampled_from(
        ["", ".", "...", "..a", "a/b", "/x", "a..b", "sp ace", "ünï/κ", "\x00nul", "a\nb"]),
)
odd_keys = st.one_of(keys, st.integers(), st.tuples(st.integers(), st.integers()), st.none())
nested = st.recursive(values, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(odd_keys, inner, max_size=3)), max_leaves=8)


def is_number(value: Any) -> bool:
    """The documented rule, written independently of rlobs: what counts as a number."""
    if isinstance(value, bool | np.bool_):
        return True
    if isinstance(value, int):
        return -FLOAT_MAX <= value <= FLOAT_MAX
    if isinstance(value, decimal.Decimal):
        return not value.is_snan()  # a signalling NaN refuses float()
    if isinstance(value, float | np.floating | np.integer):
        return True
    if isinstance(value, fractions.Fraction):
        return abs(value) <= FLOAT_MAX
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and value.device.type != "meta"
    return False


def truth_undefined(value: Any) -> bool:
    """Whether ``bool(value)`` fails (an array, a meta tensor): such a flag is rejected."""
    try:
        bool(value)
    except Exception:
        return True
    return False


def _check_log(path: Path) -> rlobs.RunLog:
    """Strict JSON on every line (no NaN literals), readable by the reader and ``show``."""
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:  # lines end in \n only
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    log = rlobs.read_run(path)
    assert log.bad_lines == () and log.torn_tail is None
    summary_rows(log)
    return log


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("properties")
    with rlobs.Hub(["jsonl"], heartbeat_s=0, env={"RLOBS_JSONL_DIR": str(directory)}) as h:
        yield h


@given(steps=st.lists(st.tuples(values, st.dictionaries(odd_keys, values, max_size=4),
                                values, values), min_size=1, max_size=6))
def test_step_takes_any_reward_metrics_and_flags(hub: rlobs.Hub,
                                                 steps: list[tuple[Any, ...]]) -> None:
    """run.step never raises; rejected counts exactly the values that are not numbers;
    the log holds every step."""
    expected = 0
    with hub.run("prop-step") as run:
        for reward, metrics, done, truncated in steps:
            run.step(reward, metrics, done=done, truncated=truncated)  # type: ignore[arg-type]
            expected += (not is_number(reward)) + sum(not is_number(v)
                                                       for v in metrics.values())
            expected += truth_undefined(done) + truth_undefined(truncated)
    assert run.result is not None and run.log_path is not None
    log = _check_log(run.log_path)
    assert len(log.steps) == run.result.steps == len(steps)
    assert run.result.rejected == expected
    for step in log.steps:
        assert all(isinstance(v, float | int) for v in step.metrics.values())


@given(params=st.dictionaries(odd_keys, nested, max_size=5),
       tags=st.dictionaries(odd_keys, nested, max_size=5),
       summary=st.dictionaries(odd_keys, values, max_size=4))
def test_params_tags_and_summaries_take_anything(hub: rlobs.Hub, params: dict[Any, Any],
                                                 tags: dict[Any, Any],
                                                 summary: dict[Any, Any]) -> None:
    """Params and tags of any shape (cyclic, deep, odd keys) are recorded JSON-safe;
    summaries keep their numbers and count the rest."""
    with hub.run("prop-params", params=params, tags=tags) as run:
        run.log_params(params)
        run.set_tags(tags)
        run.log_summary(summary)
    assert run.result is not None and run.log_path is not None
    log = _check_log(run.log_path)
    assert all(isinstance(v, str) for v in log.start.tags.values())
    assert run.result.rejected == sum(not is_number(v) for v in summary.values())


@given(name=st.text(max_size=40), attributes=st.dictionaries(odd_keys, nested, max_size=5),
       error=st.one_of(st.none(), st.text(max_size=30)))
def test_spans_take_any_name_and_attributes(hub: rlobs.Hub, name: str,
                                            attributes: dict[Any, Any],
                                            error: str | None) -> None:
    """Spans with odd names and attributes (tuple keys, cycles, NaN) land whole."""
    with hub.run("prop-span") as run:
        with run.span(name, ok=1):
            pass
        run.record_span(name, rlobs.wall_ns(), rlobs.wall_ns(), attributes, error=error)
        run.step(1.0)
    assert run.log_path is not None
    log = _check_log(run.log_path)
    assert len(log.spans) == 2 and [s.name for s in log.spans] == [name, name]


@given(run_name=st.text(max_size=40), run_id=st.one_of(st.none(), st.text(max_size=20)))
def test_run_names_are_labels_and_run_ids_safe_file_names(
        hub: rlobs.Hub, run_name: str, run_id: str | None) -> None:
    """Any name is accepted and never becomes a path; a run id is accepted exactly when
    it is a safe file name, and its log lands inside the log directory."""
    import re

    safe = run_id is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", run_id)
    if not safe:
        with pytest.raises(rlobs.InvalidRunId):
            hub.run(run_name, run_id=run_id)
        return
    with hub.run(run_name, run_id=run_id) as run:
        run.step(1.0)
    assert run.log_path is not None and hub.log_directory is not None
    assert run.log_path.resolve().parent == hub.log_directory.resolve()
    starts = [e for e in _check_log(run.log_path).events if isinstance(e, rlobs.RunStart)]
    assert starts[-1].name == run_name  # an id used before resumes that run's log


@given(path=st.one_of(st.text(max_size=20), st.just("/no/such/path"), st.just("")))
def test_missing_artifacts_are_counted_not_raised(hub: rlobs.Hub, path: str) -> None:
    """An artifact path that does not exist is counted in rejected, never raised."""
    with hub.run("prop-artifact") as run:
        run.log_artifact(f"/no/such/dir/{path}")
    assert run.result is not None and run.result.rejected == 1


@pytest.mark.slow
@settings(max_examples=4)
@given(steps=st.lists(st.tuples(numbers, st.dictionaries(keys, values, max_size=3)),
                      min_size=1, max_size=5),
       params=st.dictionaries(keys, nested, max_size=4))
def test_a_real_mlflow_run_takes_every_accepted_value(
        mlflow_server: Any, steps: list[tuple[Any, ...]], params: dict[Any, Any]) -> None:
    """Odd keys and values into a real MLflow server: the run ends FINISHED, no request
    refused, every step's reward stored."""
    from mlflow_support import client, experiment_name, find_run, steps_of

    from sinks.mlflow import MlflowSink

    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, \
            hub.run("prop-mlflow", params=params) as run:
        for reward, metrics in steps:
            run.step(reward, metrics)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    assert found.info.status == "FINISHED"
    assert "rlobs.missing" not in found.data.tags, found.data.tags.get("rlobs.missing")
    finite = [i for i, (r, _) in enumerate(steps) if is_number(r) and math.isfinite(float(r))]
    assert steps_of(c, found.info.run_id, "step_reward") == finite


def test_a_nul_byte_in_an_artifact_or_input_path_is_counted_not_raised(hub: rlobs.Hub) -> None:
    """Paths the OS cannot take (a NUL byte) are rejected and counted like missing ones."""
    with hub.run("prop-nul") as run:
        run.log_artifact("/tmp/a\x00b")
        assert run.log_input_hash("/tmp/a\x00b") is None
    assert run.result is not None and run.result.rejected == 2
