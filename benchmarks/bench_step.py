"""Hot-path cost of the hub, against a bare ``deque.append`` measured in the same run.

Prints per-call cost (µs) of:
- ``deque.append`` of a 3-key dict (the baseline),
- ``run.step(reward, metrics={3 keys})`` with the JSONL sink plus two no-op sinks,
- ``run.span(...)`` around nothing, with a span-taking sink and with none,
then the JSONL sink's sustained rate: a loop stepping flat out, every step on disk.

Calls are timed in blocks of ``--block`` calls (a timer per call would cost more than the
call); the percentiles are over blocks. Trials interleave the variants. The loop steps flat
out while the sinks' workers drain concurrently: blocks that overlap a worker holding the
GIL (JSON encoding, delivery) pay for that work too, which is what the mean and p99 show;
the p50 is the call's own cost.

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
    sinks: list[str | Sink] = ["jsonl", NoopSink("noop1"),
                               NoopSink("noop2")]
    env = {"RLOBS_JSONL_DIR": directory}
    with rlobs.Hub(sinks, env=env, heartbeat_s=0, handle_signals=False) as hub, \
            rlobs.Hub([NoopSink("nospans", wants_spans=False)], heartbeat_s=0,
                      handle_signals=False) as quiet, \
            rlobs.Hub([], heartbeat_s=0, handle_signals=False) as bare:
        with hub.run("bench-step") as run, quiet.run("bench-quiet") as quiet_run, \
                bare.run("bench-bare") as bare_run:
            base: collections.deque[dict[str, float]] = collections.deque(maxlen=1 << 16)

            def baseline() -> None:
                base.append(dict(metrics))

            def step() -> None:
                run.step(1.0, metrics)

            def step_bare() -> None:
                bare_run.step(1.0, metrics)

            def span() -> None:
                with run.span("actor.forward", batch_size=1):
                    pass

            def span_off() -> None:
                with quiet_run.span("actor.forward", batch_size=1):
                    pass

            variants = {"deque.append(dict(3 keys)) [baseline]": baseline,
                        "run.step(reward, 3 metrics), jsonl + 2 no-op sinks": step,
                        "run.step(reward, 3 metrics), no sink (the run's own work)": step_bare,
                        "run.span() around nothing, sinks take spans": span,
                        "run.span() around nothing, no sink takes spans": span_off}
            for _ in range(trials):
                for label, call in variants.items():
                    samples[label] += _blocks(call, blocks, block)
                    hub.flush(60)
        status = {s.name: s for s in hub.status()}
    assert status["jsonl"].dropped == 0, status
    return samples


def jsonl_rate(steps: int, directory: str) -> tuple[float, int, int]:
    """Steps/s of a loop stepping flat out with only the JSONL sink; (rate, on disk, dropped)."""
    env = {"RLOBS_JSONL_DIR": directory}
    with rlobs.Hub(["jsonl"], env=env, heartbeat_s=0, handle_signals=False) as hub:
        began = time.perf_counter()
        with hub.run("bench-rate") as run:
            for t in range(steps):
                run.step(1.0, {"loss": 0.25, "entropy": 1.5, "q": float(t)})
        elapsed = time.perf_counter() - began
        dropped = hub.status()[0].dropped
    log = rlobs.read_run(f"{directory}/{run.run_id}.jsonl")
    return steps / elapsed, len(log.steps), dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate-steps", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        samples = hot_path(args.blocks, args.block, args.trials, directory)
        rate, on_disk, dropped = jsonl_rate(args.rate_steps, directory)
    base_p50 = _summary(next(iter(samples.values())))[0]
    print(f"python {sys.version.split()[0]}, {args.trials} trials x {args.blocks} blocks x "
          f"{args.block} calls\n")
    print("| call | p50 µs | mean µs | p99 µs | × baseline (p50) |\n|---|---:|---:|---:|---:|")
    for label, values in samples.items():
        p50, mean, p99 = _summary(values)
        print(f"| {label} | {p50:.3f} | {mean:.3f} | {p99:.3f} | {p50 / base_p50:.1f} |")
    print(f"\nJSONL sink alone, loop stepping flat out: {rate:,.0f} steps/s; "
          f"{on_disk:,} of {args.rate_steps:,} steps on disk, {dropped} dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
