"""System metrics: CPU, memory, disk, network and GPU, sampled off the agent's thread.

One daemon thread per hub samples the host every ``RLOBS_SYSTEM_METRICS_S`` seconds and
records the sample as a summary (``run.log_summary``) of each open top-level run, so
every sink gets it. Keys are MLflow's own (``system/cpu_utilization_percentage``, …), so
MLflow's System metrics tab shows them. psutil measures the host; nvidia-ml-py the GPUs
when it is installed and finds a driver, else GPUs are skipped (logged once). Without
psutil there is no sampling at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

from ._log import logger

PREFIX = "system/"


class _Gpus:
    """NVML handles of the visible GPUs; empty when there is no driver or library."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self._nvml: Any = None
        if importlib.util.find_spec("pynvml") is None:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception as exc:  # NVMLError: no driver, no GPU
            logger.info("no GPU metrics", reason=str(exc))

    def sample(self, out: dict[str, float]) -> None:
        nvml = self._nvml
        for i, handle in enumerate(self.handles):
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                out[f"gpu_{i}_memory_usage_megabytes"] = memory.used / 1e6
                out[f"gpu_{i}_memory_usage_percentage"] = 100.0 * memory.used / memory.total
                out[f"gpu_{i}_utilization_percentage"] = float(
                    nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000
                out[f"gpu_{i}_power_usage_watts"] = watts
                limit = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
                if limit:
                    out[f"gpu_{i}_power_usage_percentage"] = 100.0 * watts / limit
            except Exception as exc:  # one GPU's failure loses its own figures only
                logger.debug("GPU metrics failed", gpu=i, error=str(exc))

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # best effort at close
                self._nvml.nvmlShutdown()
            self._nvml = None


class Sampler:
    """Samples the host every ``interval_s`` on its own daemon thread.

    Args:
        interval_s: seconds between samples (the first comes after one interval).
        deliver: called on the sampler's thread with each sample (``system/…`` keys).
    """

    def __init__(self, interval_s: float, deliver: Callable[[dict[str, float]], None]) -> None:
        import psutil

        self.interval_s = interval_s
        self._deliver = deliver
        self._psutil = psutil
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpus: _Gpus | None = None
        self._net0: tuple[float, float] | None = None

    @staticmethod
    def available() -> bool:
        """Whether psutil is installed (without importing it)."""
        return importlib.util.find_spec("psutil") is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="rlobs-system-metrics",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; waits briefly for the thread (safe to call twice)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        if self._gpus is not None:
            self._gpus.close()

    def sample(self) -> dict[str, float]:
        """One sample now (``system/…`` keys)."""
        ps = self._psutil
        out: dict[str, float] = {"cpu_utilization_percentage": ps.cpu_percent(None)}
        memory = ps.virtual_memory()
        out["system_memory_usage_megabytes"] = memory.used / 1e6
        out["system_memory_usage_percentage"] = float(memory.percent)
        try:
            disk = ps.disk_usage(os.sep)
            out["disk_usage_percentage"] = float(disk.percent)
            out["disk_usage_megabytes"] = disk.used / 1e6
            out["disk_available_megabytes"] = disk.free / 1e6
        except OSError:
            pass
        net = ps.net_io_counters()
        if net is not None:
            now = (net.bytes_recv / 1e6, net.bytes_sent / 1e6)
            base = self._net0 = self._net0 or now
            out["network_receive_megabytes"] = now[0] - base[0]
            out["network_transmit_megabytes"] = now[1] - base[1]
        if self._gpus is None:
            self._gpus = _Gpus()
        self._gpus.sample(out)
        return {PREFIX + key: value for key, value in out.items()}

    def _main(self) -> None:
        try:
            self.sample()  # primes cpu_percent and the network baseline
        except Exception as exc:
            logger.warning("system metrics off", error=repr(exc))
            return
        while not self._stop.wait(self.interval_s):
            try:
                self._deliver(self.sample())
            except Exception as exc:  # never let a sampling failure end the thread quietly
                logger.warning("system metrics sample failed", error=repr(exc))
