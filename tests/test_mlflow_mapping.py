"""MLflow sink's pure parts: keys, values, limits, NaN policy, downsampling, span stats."""

from __future__ import annotations

import math

import pytest

import rlobs
from sinks.mlflow._aggregate import Downsample, Point, SpanStats, StepPoints, percentile
from sinks.mlflow._mapping import (
    MAX_PARAMS_TAGS_PER_BATCH,
    NonFinite,
    chunk_items,
    map_params,
    map_tags,
    sanitize_key,
)
from sinks.mlflow._native import native_tags, run_name


def _step(i: int, metrics: dict[str, float], ns: int = 0, done: bool = False) -> rlobs.Step:
    return rlobs.Step("r", i, 1.0, float(i + 1), metrics, done, False, 0,
                      float(i + 1) if done else None, i + 1 if done else None, ns)


@pytest.mark.parametrize(("key", "expected"), [
    ("loss/actor", "loss/actor"), ("a b:c.d-e", "a b:c.d-e"), ("q(s,a)", "q_s_a_"),
    ("/abs", "abs"), ("a/../b", "a/__/b"), ("", "_"), ("k" * 300, "k" * 250),
])
def test_keys_are_sanitised_to_mlflow_rules(key: str, expected: str) -> None:
    """Keys keep MLflow's characters only, never escape as paths, stay ≤ 250 chars."""
    assert sanitize_key(key) == expected


def test_renamed_param_keeps_original_in_tag() -> None:
    """A param whose key had to change keeps its original key in an ``rlobs.key.`` tag."""
    params, tags = map_params({"lr(actor)": 0.1, "ok": [1, {"a": 2}]})
    assert params == {"lr_actor_": "0.1", "ok": '[1, {"a": 2}]'}
    assert tags == {"rlobs.key.lr_actor_": "lr(actor)"}


def test_long_tag_value_truncated_with_marker() -> None:
    """A tag value over 8000 chars is cut to 8000 ending in the truncation marker."""
    value = map_tags({"t": "x" * 9000})["t"]
    assert len(value) == 8000 and value.endswith("...[truncated]")


def test_batches_respect_count_and_size_limits() -> None:
    """Params/tags go out ≤ 100 per request and under the request size limit."""
    many = {f"k{i}": "v" for i in range(250)}
    assert [len(c) for c in chunk_items(many)] == [100, 100, 50]
    big = {f"k{i}": "x" * 6000 for i in range(MAX_PARAMS_TAGS_PER_BATCH)}
    assert all(sum(len(k) + len(v) for k, v in c) < 1_000_000 for c in chunk_items(big))


def test_nonfinite_counts_per_kind_and_first_step() -> None:
    """NaN, +Inf and -Inf are counted per key with the first step they appeared at."""
    counter = NonFinite()
    for step, value in [(4, math.nan), (5, math.inf), (6, math.nan), (7, -math.inf)]:
        counter.add("q", value, step)
    assert counter.take_tags() == {"rlobs.nonfinite.q": "nan=2 posinf=1 neginf=1 first_step=4"}
    assert counter.take_tags() == {} and counter.total == 4


def test_step_points_skip_nonfinite_values() -> None:
    """A non-finite metric value produces no point; finite ones in the same step do."""
    conv, out = StepPoints(Downsample()), []
    conv.convert(_step(0, {"a": math.nan, "b": 2.0}), out)
    assert sorted(k for k, *_ in out) == ["b", "cumulative_reward", "step_reward"]
    assert conv.nonfinite.total == 1


def test_window_downsampling_gives_mean_min_max_last() -> None:
    """``window:1`` aggregates each key per second of event time."""
    conv, out = StepPoints(Downsample.parse("window:1")), []
    for i, value in enumerate([1.0, 3.0, 2.0]):
        conv.convert(_step(i, {"m": value}, ns=i * 100_000_000), out)
    conv.convert(_step(3, {"m": 9.0}, ns=2_000_000_000), out)
    conv.finish(out)
    got = {(k, s): v for k, v, _, s in out if k.startswith("m")}
    assert got == {("m", 2): 2.0, ("m.min", 2): 1.0, ("m.max", 2): 3.0, ("m.last", 2): 2.0,
                   ("m", 3): 9.0, ("m.min", 3): 9.0, ("m.max", 3): 9.0, ("m.last", 3): 9.0}


def test_every_downsampling_counts_env_steps_of_vector_records() -> None:
    """``every:N`` keeps a record of several env steps (a vector step on SB3's timestep
    axis) when the indices it stands for hold a multiple of N."""
    conv, out = StepPoints(Downsample.parse("every:8")), []
    for index in range(3, 40, 4):  # records of 4 env steps: indices 3, 7, 11, ...
        step = _step(index, {"m": float(index)})._replace(env_steps=4)
        conv.convert(step, out)
    assert sorted({s for k, _, _, s in out if k == "m"}) == [3, 11, 19, 27, 35]


@pytest.mark.parametrize("text", ["every:0", "window:-1", "every:x", "hourly"])
def test_bad_downsample_text_is_config_error(text: str) -> None:
    """Invalid downsample settings fail fast with a ConfigError."""
    with pytest.raises(rlobs.ConfigError):
        Downsample.parse(text)


def test_span_stats_close_interval_by_event_time() -> None:
    """Span statistics are emitted when an interval of event time closes, and at the end."""
    stats, out = SpanStats(interval_s=1.0), []
    spans = [rlobs.Span("r", "act", i, t, t + (i + 1) * 1_000_000, {}, i, None, None)
             for i, t in enumerate([0, 500_000_000, 1_200_000_000])]
    for span in spans:
        stats.add(span, out)
    assert {k: v for k, v, *_ in out} == {"span.act.p50_ms": 1.0, "span.act.p95_ms": 2.0,
                                          "span.act.p99_ms": 2.0, "span.act.mean_ms": 1.5,
                                          "span.act.count": 2.0}
    final: list[Point] = []
    stats.finish(1300, 2, final)
    assert {k: v for k, v, *_ in final}["span.act.run.count"] == 3.0


def test_span_run_stats_left_out_when_one_interval_says_it_all() -> None:
    """A run shorter than one interval gets ``span.X.*`` only: ``span.X.run.*`` would
    repeat the very same values."""
    stats, out = SpanStats(interval_s=10.0), []
    for i in range(3):
        stats.add(rlobs.Span("r", "act", i, 0, (i + 1) * 1_000_000, {}, i, None, None), out)
    stats.finish(10, 3, out)
    keys = {k for k, *_ in out}
    assert "span.act.count" in keys and not any(".run." in k for k in keys)


@pytest.mark.parametrize(("name", "params", "expected"), [
    ("ppo-cartpole", {"seed": 3}, "ppo-cartpole-seed3"),
    ("ppo-cartpole", {"algo.seed": 7}, "ppo-cartpole-seed7"),
    ("ppo-cartpole-s3", {"seed": 3}, "ppo-cartpole-s3"),
    ("ppo-3", {"seed": 3}, "ppo-3"),
    ("ppo-13", {"seed": 3}, "ppo-13-seed3"),
    ("ppo", {"lr": 3}, "ppo"),
])
def test_seeds_get_distinguishable_run_names(name: str, params: dict[str, object],
                                             expected: str) -> None:
    """A seed the run name does not show is appended to the MLflow run name."""
    assert run_name(name, params) == expected


def test_native_tags_from_provenance_user_tags_win() -> None:
    """Source, commit, user and description map to MLflow's own tags; the user's own
    ``mlflow.*`` tags win over the derived ones."""
    tags = native_tags({"rlobs.source": "/x/train.py", "rlobs.user": "alice",
                        "rlobs.git.commit": "abc", "rlobs.description": "baseline",
                        "mlflow.user": "bob"})
    assert tags == {"mlflow.source.name": "/x/train.py", "mlflow.source.type": "LOCAL",
                    "mlflow.user": "bob", "mlflow.source.git.commit": "abc",
                    "mlflow.note.content": "baseline"}


def test_percentile_is_nearest_rank() -> None:
    """Percentiles use the nearest-rank method on sorted values."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (
        50.0, 95.0, 99.0)
