"""Isolation: a sink that raises, hangs or crawls never stalls the loop or the others."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import rlobs
from rlobs import RunEnd, RunStart, RunStatus, Step
from rlobs.testing import HOOKS, FailingSink, HangingSink, RecordingSink, SlowSink

N = 2000


def _run_loop(hub: rlobs.Hub, n: int = N) -> rlobs.Run:
    with hub.run("isolation") as run:
        for t in range(n):
            run.step(1.0, {"x": float(t)})
    return run


@pytest.mark.parametrize("hook", [h for h in HOOKS if h not in ("open", "close")])
def test_sink_raising_in_a_hook_is_counted_and_keeps_receiving(
    hook: str, tmp_path: Path
) -> None:
    """A sink raising in any hook is counted; it and its neighbours receive every event."""
    failing, healthy = FailingSink(hooks=[hook]), RecordingSink()
    (tmp_path / "a.txt").write_text("artifact")
    with rlobs.Hub([failing, healthy], heartbeat_s=0.01) as hub:
        with hub.run("raising") as run:
            for t in range(200):
                with run.span("act"):
                    pass
                run.step(1.0)
                if t == 100:
                    assert healthy.wait_for(lambda s: s.of_type(rlobs.Heartbeat), 5)
            run.set_tags({"k": "v"})
            run.log_artifact(tmp_path / "a.txt")
        status = {s.name: s for s in hub.status()}
    for sink in (failing, healthy):
        assert len(sink.of_type(Step)) == 200
        assert len(sink.of_type(rlobs.Span)) == 200
        assert len(sink.of_type(RunEnd)) == 1
    assert status["failing"].errors > 0
    assert (status["failing"].last_error or "").startswith(hook)
    assert status["recording"].errors == 0


def test_sink_failing_to_open_is_unavailable_and_the_run_goes_on() -> None:
    """A sink whose open fails is reported unavailable with the reason; others work."""
    broken, healthy = FailingSink("broken", hooks=["open"]), RecordingSink()
    with rlobs.Hub([broken, healthy], heartbeat_s=0) as hub:
        run = _run_loop(hub, 100)
        status = {s.name: s for s in hub.status()}
    assert run.result is not None and run.result.status is RunStatus.FINISHED
    assert not status["broken"].available
    assert "fails in open" in (status["broken"].detail or "")
    assert broken.of_type(RunStart) == []
    assert len(healthy.of_type(Step)) == 100


def test_missing_optional_dependency_is_reported_with_install_hint() -> None:
    """A sink whose dependency is missing says how to install it; nothing else breaks."""

    class NeedsMissing(rlobs.Sink):
        name = "needs-missing"

        def open(self) -> None:
            rlobs.require("rlobs_no_such_module", "mlflow")

    healthy = RecordingSink()
    with rlobs.Hub([NeedsMissing(), healthy], heartbeat_s=0) as hub:
        _run_loop(hub, 10)
        detail = hub.status()[0].detail or ""
    assert 'pip install "rlobs[mlflow]"' in detail
    assert len(healthy.of_type(Step)) == 10


def test_hanging_sink_is_abandoned_within_the_timeout() -> None:
    """A sink hanging forever costs the loop nothing; run end and close stay bounded."""
    hanging, healthy, slow = HangingSink(), RecordingSink(), SlowSink(delay_s=0.0001)
    timeout = 1.0
    began = time.monotonic()
    with rlobs.Hub([hanging, healthy, slow], end_timeout_s=timeout, heartbeat_s=0) as hub:
        run = _run_loop(hub)
        assert hanging.entered.wait(5)
    elapsed = time.monotonic() - began
    hanging.release()
    assert elapsed < 3 * timeout + 2  # run end and close: one timeout each, plus start
    assert run.result is not None and run.result.status is RunStatus.FINISHED
    for sink in (healthy, slow):
        assert len(sink.of_type(Step)) == N
        assert len(sink.of_type(RunEnd)) == 1
    assert hanging.of_type(RunEnd) == []  # still stuck in its first step


def test_loop_is_not_slowed_by_a_hanging_sink() -> None:
    """Steps enqueue while a sink hangs: the loop ends long before any timeout."""
    hanging = HangingSink()
    with rlobs.Hub([hanging], end_timeout_s=0.5, heartbeat_s=0) as hub:
        with hub.run("hang") as run:
            run.step(1.0)
            assert hanging.entered.wait(5)
            began = time.monotonic()
            for _ in range(5000):
                run.step(1.0)
            loop_s = time.monotonic() - began
        hanging.release()
    assert loop_s < 0.5  # 5000 enqueues; a blocked loop would take the whole timeout


def test_every_started_sink_gets_run_end_on_exception() -> None:
    """An exception in the loop ends the run `failed` in every sink, error included."""
    sinks = [RecordingSink("a"), FailingSink("b"), SlowSink("c", delay_s=0.001)]
    with rlobs.Hub(sinks, heartbeat_s=0) as hub:
        with pytest.raises(ZeroDivisionError), hub.run("boom") as run:
            run.step(1.0)
            _ = 1 / 0
    for sink in sinks:
        (end,) = sink.of_type(RunEnd)
        assert end.status is RunStatus.FAILED
        assert end.error == "ZeroDivisionError: division by zero"


def test_concurrent_threads_share_one_run_consistently() -> None:
    """Steps from several threads get unique indices and a consistent total."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("threads") as run:
        def work() -> None:
            for _ in range(2000):
                run.step(1.0)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    steps = sink.of_type(Step)
    assert sorted(s.step for s in steps) == list(range(8000))
    assert sink.of_type(RunEnd)[0].total_reward == 8000.0
    assert max(s.cumulative_reward for s in steps) == 8000.0


def test_disabled_sink_is_reported_and_never_fed() -> None:
    """A sink whose configuration disables it is listed, not opened, and gets no events."""
    off, on = RecordingSink("off"), RecordingSink("on")
    off.enabled = False
    with rlobs.Hub([off, on], heartbeat_s=0) as hub:
        _run_loop(hub, 10)
        status = {s.name: s for s in hub.status()}
    assert not status["off"].enabled and not status["off"].available
    assert off.calls == [] and len(on.of_type(Step)) == 10


def test_sink_slow_over_a_run_end_still_gets_closed() -> None:
    """A sink that overran the run-end bound is still given its close (where data flushes)."""

    class SlowEnd(RecordingSink):
        def on_run_end(self, event: RunEnd) -> None:
            time.sleep(0.8)
            super().on_run_end(event)

    sink = SlowEnd("slow-end")
    with rlobs.Hub([sink], end_timeout_s=0.5, heartbeat_s=0) as hub:
        _run_loop(hub, 10)
    assert sink.closed
    assert len(sink.of_type(RunEnd)) == 1
