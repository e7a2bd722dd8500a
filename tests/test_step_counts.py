"""Vector steps in the core: episodes a step ends, env steps a record stands for, and
numpy/torch scalars wherever a number goes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import rlobs
from rlobs import Hub, RunEnd, RunStart, RunUpdate, Step
from rlobs.testing import RecordingSink
from sinks.console import ConsoleSink


@pytest.fixture
def hub_sink() -> Iterator[tuple[Hub, RecordingSink]]:
    sink = RecordingSink()
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        yield hub, sink


def test_episodes_ended_by_a_vector_step_are_counted(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """``episodes=`` adds to run.episodes and RunEnd.episodes, with done steps as well."""
    hub, sink = hub_sink
    with hub.run("vec") as run:
        run.step(1.0, episodes=3)
        run.step(1.0)
        run.step(1.0, done=True)
        run.step(1.0, episodes=np.int64(2))
        assert run.episodes == 6
    assert sink.of_type(RunEnd)[0].episodes == 6
    assert [s.episode for s in sink.of_type(Step)] == [3, 3, 3, 6]


def test_env_steps_advance_the_step_index(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A record of ``env_steps`` env steps carries the last index; the run counts env steps."""
    hub, sink = hub_sink
    with hub.run("vec") as run:
        for _ in range(3):
            run.step(1.0, env_steps=4)
        run.step(1.0, done=True)
    steps = sink.of_type(Step)
    assert [(s.step, s.env_steps) for s in steps] == [(3, 4), (7, 4), (11, 4), (12, 1)]
    assert steps[-1].episode_length == 13
    assert sink.of_type(RunEnd)[0].steps == 13


@pytest.mark.parametrize("episodes, env_steps", [(-1, 1), (1.5, 1), ("2", 1), (0, 0), (0, 2.0),
                                             (np.zeros(2), 1), (True, 1)])
def test_bad_counts_are_counted_not_raised(hub_sink: tuple[Hub, RecordingSink],
                                           episodes: object, env_steps: object) -> None:
    """An episodes/count that is not a proper int is rejected and taken as its default."""
    hub, sink = hub_sink
    with hub.run("vec") as run:
        run.step(1.0, episodes=episodes, env_steps=env_steps)  # type: ignore[arg-type]
    end = sink.of_type(RunEnd)[0]
    assert (end.rejected, end.steps, end.episodes) == (1, 1, 0)


def test_counts_survive_the_log_and_resume(runs_dir: Path) -> None:
    """The JSONL keeps ``env_steps``; a run resumed from its log continues index and episodes."""
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        with hub.run("vec", run_id="vec-1") as run:
            run.step(1.0, env_steps=8, episodes=2)
        with hub.run("vec", run_id="vec-1") as run:
            run.step(1.0, env_steps=8, episodes=1)
    log = rlobs.read_run(runs_dir / "vec-1.jsonl")
    assert [(s.step, s.env_steps, s.episode) for s in log.steps] == [(7, 8, 2), (15, 8, 3)]
    lines = [json.loads(x) for x in (runs_dir / "vec-1.jsonl").read_text().splitlines()]
    assert [x["resumed_at"] for x in lines if x["type"] == "run_start"] == [None, 8]
    assert log.end is not None and (log.end.steps, log.end.episodes) == (16, 3)


def test_console_sees_no_missed_steps_in_counted_records() -> None:
    """Records of several env steps are not gaps for the console."""
    out = io.StringIO()
    console = ConsoleSink(out, terminal=False)
    with Hub([console], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        with hub.run("vec") as run:
            for _ in range(5):
                run.step(1.0, env_steps=16)
    assert "missed" not in out.getvalue()
    assert "80" in out.getvalue()


SCALARS = [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor(0.5).double()]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: type(v).__name__ + str(v.dtype))
def test_numpy_and_torch_scalars_are_numbers_everywhere(
        hub_sink: tuple[Hub, RecordingSink], value: object) -> None:
    """A numpy or torch scalar is a reward, a metric, a summary metric and a param."""
    hub, sink = hub_sink
    with hub.run("np", params={"lr": value}) as run:
        run.step(value, {"loss": value, "n": np.int64(3), "ok": np.bool_(True)},  # type: ignore[arg-type]
                 done=np.bool_(True))
        run.log_summary({"final": value, "count": np.int32(7)})  # type: ignore[dict-item]
        run.log_params({"later": value})
    step = sink.of_type(Step)[0]
    assert (step.reward, step.metrics) == (0.5, {"loss": 0.5, "n": 3.0, "ok": 1.0})
    summary = {k: v for u in sink.of_type(RunUpdate) for k, v in u.metrics.items()}
    assert summary == {"final": 0.5, "count": 7.0}
    assert sink.of_type(RunStart)[0].params["lr"] == 0.5
    later = [u.params for u in sink.of_type(RunUpdate) if u.params]
    assert later == [{"later": 0.5}]
    end = sink.of_type(RunEnd)[0]
    assert (end.rejected, end.episodes) == (0, 1)


def test_integer_and_bool_scalar_params_keep_their_type(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """``np.int64(3)`` is the param 3 (not 3.0), ``np.bool_(True)`` is true."""
    hub, sink = hub_sink
    with hub.run("np", params={"n": np.int64(3), "flag": np.bool_(True),
                               "t": torch.tensor(4)}):
        pass
    params = sink.of_type(RunStart)[0].params
    assert params == {"n": 3, "flag": True, "t": 4}
    assert [type(params[k]) for k in ("n", "flag", "t")] == [int, bool, int]
