"""The acting-loop example (the HTTP action server: tests/test_serve_actor.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import rlobs
from rlobs import Span
from rlobs.testing import RecordingSink

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_acting_loop_records_a_span_per_action() -> None:
    """The acting example records one actor span per step on the run."""
    example = _example("sac_actor")
    sink = RecordingSink()
    actor = example.make_actor("script")
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("act") as run:
        example.act(run, actor, steps=20)
        assert hub.flush()
    spans = sink.of_type(Span)
    assert [s.step for s in spans] == list(range(20))
    assert {s.attributes["backend"] for s in spans} == {"script"}


def test_acting_example_main_runs(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`examples/sac_actor.py` runs end to end on the environment's sinks."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    assert _example("sac_actor").main(["--steps", "10", "--backend", "eager"]) == 0
    assert "10 steps" in capsys.readouterr().out
