"""``rlobs export-trace``: a run log as Chrome trace events that nest like the run did."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import rlobs
from rlobs import _cli, wall_ns


def _record_run(runs_dir: Path) -> Path:
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, \
            hub.run("trace-demo") as run:
        for _ in range(3):
            with run.span("actor.forward", bs=1), run.span("actor.mlp"):
                time.sleep(0.001)
            run.step(1.0, {"loss": 0.5})
    (path,) = runs_dir.glob("*.jsonl")
    return path


def _export(path: Path, out: Path) -> list[dict[str, Any]]:
    assert _cli.main(["export-trace", str(path), "-o", str(out)]) == 0
    events: list[dict[str, Any]] = json.loads(out.read_text())["traceEvents"]
    return [e for e in events if e["ph"] == "X"]


def _inside(child: dict[str, Any], parent: dict[str, Any]) -> bool:
    eps = 1e-6
    return (parent["ts"] - eps <= child["ts"]
            and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + eps)


def test_run_step_span_nest_on_one_track(runs_dir: Path, tmp_path: Path) -> None:
    """The run holds its steps, each step its spans, nested spans their parent, on track 1."""
    slices = _export(_record_run(runs_dir), tmp_path / "trace.json")
    (run,) = [s for s in slices if s["cat"] == "run"]
    steps = sorted((s for s in slices if s["cat"] == "step"), key=lambda s: s["ts"])
    spans = [s for s in slices if s["cat"] == "span"]
    assert [s["name"] for s in steps] == ["step 0", "step 1", "step 2"]
    assert {s["tid"] for s in slices} == {1}
    assert all(_inside(step, run) for step in steps)
    for span in spans:
        (step,) = [s for s in steps if s["args"]["step"] == span["args"]["step"]]
        assert _inside(span, step)
    for outer, inner in zip((s for s in spans if s["name"] == "actor.forward"),
                            (s for s in spans if s["name"] == "actor.mlp"), strict=True):
        assert _inside(inner, outer)


def test_durations_match_the_log(runs_dir: Path, tmp_path: Path) -> None:
    """Span durations are the recorded ones; a step lasts from the previous step to itself."""
    path = _record_run(runs_dir)
    log = rlobs.read_run(path)
    slices = _export(path, tmp_path / "trace.json")
    spans = sorted((s for s in slices if s["cat"] == "span"), key=lambda s: s["ts"])
    recorded = sorted(log.spans, key=lambda s: s.start_ns)
    assert [s["dur"] for s in spans] == [(e.end_ns - e.start_ns) / 1000 for e in recorded]
    times = [log.start.time_ns] + [s.time_ns for s in log.steps]
    steps = sorted((s for s in slices if s["cat"] == "step"), key=lambda s: s["ts"])
    assert [s["dur"] for s in steps] == [(b - a) / 1000 for a, b in itertools.pairwise(times)]
    assert steps[0]["ts"] == 0.0


def test_overlapping_spans_go_to_another_track(runs_dir: Path, tmp_path: Path) -> None:
    """Spans that overlap without nesting (two threads) land on separate, valid tracks."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, \
            hub.run("overlap") as run:
        t0 = wall_ns()
        run.record_span("worker.a", t0, t0 + 2_000_000)
        run.record_span("worker.b", t0 + 1_000_000, t0 + 3_000_000)
        time.sleep(0.004)
        run.step(0.0)
    (path,) = runs_dir.glob("*.jsonl")
    slices = _export(path, tmp_path / "trace.json")
    by_name = {s["name"]: s for s in slices}
    assert by_name["worker.a"]["tid"] != by_name["worker.b"]["tid"]
    for tid in {s["tid"] for s in slices}:
        track = sorted((s for s in slices if s["tid"] == tid), key=lambda s: (s["ts"], -s["dur"]))
        open_ends: list[float] = []
        for item in track:
            while open_ends and open_ends[-1] <= item["ts"]:
                open_ends.pop()
            assert not open_ends or item["ts"] + item["dur"] <= open_ends[-1]
            open_ends.append(item["ts"] + item["dur"])


def test_default_output_sits_next_to_the_log(runs_dir: Path) -> None:
    """Without ``-o`` the trace goes to ``RUN.trace.json`` beside the log."""
    path = _record_run(runs_dir)
    assert _cli.main(["export-trace", str(path)]) == 0
    document = json.loads(path.with_suffix(".trace.json").read_text())
    assert document["traceEvents"][0]["args"]["name"].startswith("trace-demo")


def test_a_span_nests_in_its_own_parent_not_anothers(runs_dir: Path,
                                                      tmp_path: Path) -> None:
    """Two tasks' turns overlap; a call of the second turn that also lies inside the first
    sits in its own turn, on the second turn's track."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, \
            hub.run("agents") as run:
        t0 = wall_ns()
        first = run.record_span("turn.a", t0, t0 + 10_000_000, parent_span_id=None)
        second = run.record_span("turn.b", t0 + 1_000_000, t0 + 12_000_000,
                                 parent_span_id=None)
        run.record_span("llm.b", t0 + 2_000_000, t0 + 3_000_000, parent_span_id=second)
        run.record_span("llm.a", t0 + 4_000_000, t0 + 5_000_000, parent_span_id=first)
        time.sleep(0.013)
        run.step(0.0)
    (path,) = runs_dir.glob("*.jsonl")
    by_name = {s["name"]: s for s in _export(path, tmp_path / "trace.json")}
    assert by_name["turn.a"]["tid"] != by_name["turn.b"]["tid"]
    assert by_name["llm.b"]["tid"] == by_name["turn.b"]["tid"]
    assert by_name["llm.a"]["tid"] == by_name["turn.a"]["tid"]
