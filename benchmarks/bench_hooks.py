"""What the Gymnasium wrapper and the console sink cost the agent's thread, per env step.

Same process, interleaved trials, medians; the baseline (the bare env) is measured in
the same run. Prints a markdown table.

    PYTHONPATH=. python benchmarks/bench_hooks.py [--steps 20000] [--trials 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable

import gymnasium as gym

from rlobs import Hub, Sink
from rlobs.integrations.gymnasium import RecordEpisodes
from sinks.console import ConsoleSink


def loop(env: gym.Env, steps: int) -> float:  # type: ignore[type-arg]
    """µs per step of a fixed-action CartPole loop (resets included)."""
    env.reset(seed=0)
    start = time.perf_counter_ns()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(t & 1)
        if terminated or truncated:
            env.reset()
    return (time.perf_counter_ns() - start) / steps / 1e3


def bare(steps: int, directory: str) -> float:
    return loop(gym.make("CartPole-v1"), steps)


def wrapped(sinks: Callable[[], list[object]]) -> Callable[[int, str], float]:
    def measure(steps: int, directory: str) -> float:
        with Hub(sinks(), heartbeat_s=0, handle_signals=False, provenance=False,  # type: ignore[arg-type]
                 env={"RLOBS_JSONL_DIR": directory}) as hub, hub.run("bench"):
            return loop(RecordEpisodes(gym.make("CartPole-v1")), steps)
    return measure


CASES: dict[str, Callable[[int, str], float]] = {
    "bare env (baseline)": bare,
    "RecordEpisodes, no sink": wrapped(list),
    "RecordEpisodes, jsonl": wrapped(lambda: ["jsonl"]),
    "RecordEpisodes, jsonl + a no-op sink": wrapped(lambda: ["jsonl", Sink()]),
    "RecordEpisodes, jsonl + console (live)": wrapped(
        lambda: ["jsonl", ConsoleSink(io.StringIO(), terminal=True, refresh_s=0.0)]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.trials):
            for name, case in CASES.items():
                results[name].append(case(args.steps, directory))
    base = statistics.median(results["bare env (baseline)"])
    print(f"CartPole-v1, {args.steps:,} steps x {args.trials} trials, median µs/step\n")
    print("| case | µs/step | over bare env |")
    print("|---|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median - base:+.2f} |")


if __name__ == "__main__":
    main()
