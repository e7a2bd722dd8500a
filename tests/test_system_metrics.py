"""System metrics: sampled on a thread of their own, recorded on open top-level runs
under MLflow's ``system/…`` names, GPUs skipped cleanly without a driver."""

from __future__ import annotations

import threading
import time

import pytest

import rlobs
from rlobs._system import Sampler
from rlobs.testing import RecordingSink

HOST_KEYS = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
             "system/system_memory_usage_percentage", "system/disk_usage_percentage",
             "system/disk_usage_megabytes", "system/disk_available_megabytes",
             "system/network_receive_megabytes", "system/network_transmit_megabytes"}


def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
        pynvml.nvmlShutdown()
        return count
    except Exception:
        return 0


def _samples(sink: RecordingSink, run_id: str) -> list[dict[str, float]]:
    return [dict(u.metrics) for u in sink.of_type(rlobs.RunUpdate)
            if u.run_id == run_id and any(k.startswith("system/") for k in u.metrics)]


def _wait_for(check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_samples_reach_top_level_runs_only() -> None:
    """Each sample is a ``system/…`` summary of the open top-level run, not its child."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0, system_metrics_s=0.1) as hub, \
            hub.run("train") as run, hub.run("cell", parent=run) as child:
        _wait_for(lambda: len(_samples(sink, run.run_id)) >= 2)
    assert hub.flush(60)
    samples = _samples(sink, run.run_id)
    assert len(samples) >= 2 and not _samples(sink, child.run_id)
    assert set(samples[0]) >= HOST_KEYS
    assert 0.0 <= samples[-1]["system/cpu_utilization_percentage"] <= 100.0 * 64
    assert samples[-1]["system/system_memory_usage_megabytes"] > 0


def test_gpus_reported_when_present_skipped_cleanly_otherwise() -> None:
    """GPU figures come per device when NVML finds one; none, and no error, when not."""
    sample = Sampler(1.0, lambda _: None).sample()
    gpu_keys = {k for k in sample if k.startswith("system/gpu_")}
    count = _gpu_count()
    if count:
        assert "system/gpu_0_utilization_percentage" in gpu_keys
        assert "system/gpu_0_memory_usage_megabytes" in gpu_keys
    else:
        assert gpu_keys == set()
    assert set(sample) >= HOST_KEYS


def test_sampled_off_the_agents_thread_and_stopped_at_close() -> None:
    """The sampler is its own daemon thread while the hub is open, gone after close."""
    def sampler_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "rlobs-system-metrics"]

    with rlobs.Hub([RecordingSink()], heartbeat_s=0, system_metrics_s=0.2) as hub:
        (thread,) = sampler_threads()
        assert thread.daemon and thread is not threading.current_thread()
    assert hub.closed and not sampler_threads()


def test_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RLOBS_SYSTEM_METRICS_S=0`` starts no sampler and records nothing."""
    monkeypatch.setenv("RLOBS_SYSTEM_METRICS_S", "0")
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("r") as run:
        assert not [t for t in threading.enumerate() if t.name == "rlobs-system-metrics"]
        run.step(1.0)
    assert hub.flush(60) and not _samples(sink, run.run_id)


def test_default_interval_is_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, the interval is 10 s; a bad value warns and falls back to it."""
    monkeypatch.delenv("RLOBS_SYSTEM_METRICS_S")
    assert rlobs.Hub([RecordingSink()]).settings.system_metrics_s == 10.0
    monkeypatch.setenv("RLOBS_SYSTEM_METRICS_S", "often")
    with pytest.warns(rlobs.ConfigWarning):
        assert rlobs.Hub([RecordingSink()]).settings.system_metrics_s == 10.0
