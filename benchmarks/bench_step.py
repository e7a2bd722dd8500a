"""Hot-path cost of a run's hooks, against a bare ``deque.append`` measured in the same run.

Prints per-call cost (µs) of:
- ``deque.append`` of a 3-key dict (the baseline),
- ``run.step(reward, metrics={3 keys})`` with the run log (what every run pays: sinks in
  the shipper process — MLflow, OpenTelemetry — add nothing to it),
- the same with two in-process no-op sinks besides, and with no log and no sink at all,
- ``run.span(...)`` around nothing, recorded, and with nothing taking spans,
then the run log's sustained rate: a loop stepping flat out, every step on disk.

Calls are timed in blocks of ``--block`` calls (a timer per call would cost more than the
call); the percentiles are over blocks. Trials interleave the variants. The run log is
encoded and written every 50 ms by the writer thread, or by the loop itself once 4096
records wait (a loop stepping flat out): blocks that contain such a write pay for it,
which is what the mean and p99 show; the p50 is the call's own cost.

    python benchmarks/bench_step.py [--blocks 400] [--block 500] [--trials 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import rlobs
from rlobs import Sink


class NoopSink(Sink):
    """Takes every event and does nothing (the hub's own cost)."""

    def __init__(self, name: str, wants_spans: bool = True) -> None:
        self.name = name
        self.wants_spans = wants_spans


def _blocks(call: Callable[[], None], blocks: int, block: int) -> list[float]:
    per_call = []
    clock = time.perf_counter_ns
    loop = range(block)
    for _ in range(blocks):
        start = clock()
        for _ in loop:
            call()
        per_call.append((clock() - start) / block / 1000)
    return per_call


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered), statistics.fmean(ordered),
            ordered[int(0.99 * (len(ordered) - 1))])


def hot_path(blocks: int, block: int, trials: int, directory: str) -> dict[str, list[float]]:
    """Per-call samples of each variant, trials interleaved."""
    metrics = {"loss": 0.25, "entropy": 1.5, "q": 3.0}
    samples: dict[str, list[float]] = collections.defaultdict(list)
    env = {"RLOBS_JSONL_DIR": directory}
    hubs = [rlobs.Hub(sinks, env=env, heartbeat_s=0, handle_signals=False).start()
            for sinks in (["jsonl"], ["jsonl", NoopSink("noop1"), NoopSink("noop2")],
                          [NoopSink("nospans", wants_spans=False)], [])]
    logged, fanned, quiet, bare = (hub.run(f"bench-{i}").start() for i, hub in enumerate(hubs))
    base: collections.deque[dict[str, float]] = collections.deque(maxlen=1 << 16)

    def baseline() -> None:
        base.append(dict(metrics))

    def span() -> None:
        with logged.span("actor.forward", batch_size=1):
            pass

    def span_off() -> None:
        with quiet.span("actor.forward", batch_size=1):
            pass

    variants = {
        "deque.append(dict(3 keys)) [baseline]": baseline,
        "run.step(reward, 3 metrics), run log (sinks in the shipper add nothing)":
            lambda: logged.step(1.0, metrics),
        "run.step(reward, 3 metrics), run log + 2 in-process no-op sinks":
            lambda: fanned.step(1.0, metrics),
        "run.step(reward, 3 metrics), no log, no sink (the run's own work)":
            lambda: bare.step(1.0, metrics),
        "run.span() around nothing, recorded": span,
        "run.span() around nothing, nothing takes spans": span_off,
    }
    for _ in range(trials):
        for label, call in variants.items():
            samples[label] += _blocks(call, blocks, block)
            for hub in hubs:
                hub.flush(60)
    for hub in hubs:
        hub.close()
    assert logged.result is not None and logged.result.dropped == {}
    return samples


def jsonl_rate(steps: int, directory: str) -> tuple[float, int, int]:
    """Steps/s of a loop stepping flat out with the run log, from the first step to the
    run's end written; (rate, steps on disk, dropped)."""
    env = {"RLOBS_JSONL_DIR": directory}
    with rlobs.Hub(["jsonl"], env=env, heartbeat_s=0, handle_signals=False) as hub:
        run = hub.run("bench-rate").start()
        began = time.perf_counter()
        for t in range(steps):
            run.step(1.0, {"loss": 0.25, "entropy": 1.5, "q": float(t)})
        run.end()
        elapsed = time.perf_counter() - began
    log = rlobs.read_run(f"{directory}/{run.run_id}.jsonl")
    assert run.result is not None
    return steps / elapsed, len(log.steps), sum(run.result.dropped.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate-steps", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        samples = hot_path(args.blocks, args.block, args.trials, directory)
        rates = [jsonl_rate(args.rate_steps, directory) for _ in range(args.trials)]
    rate, on_disk, dropped = sorted(rates)[len(rates) // 2]
    base_p50 = _summary(next(iter(samples.values())))[0]
    print(f"python {sys.version.split()[0]}, {args.trials} trials x {args.blocks} blocks x "
          f"{args.block} calls\n")
    print("| call | p50 µs | mean µs | p99 µs | × baseline (p50) |\n|---|---:|---:|---:|---:|")
    for label, values in samples.items():
        p50, mean, p99 = _summary(values)
        print(f"| {label} | {p50:.3f} | {mean:.3f} | {p99:.3f} | {p50 / base_p50:.1f} |")
    print(f"\nRun log, loop stepping flat out (median of {args.trials}): {rate:,.0f} steps/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r, _, _ in sorted(rates))}); "
          f"{on_disk:,} of {args.rate_steps:,} steps on disk, {dropped} dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
