"""What logging costs a real training job: SB3 PPO on CartPole-v1, whole-process wall time.

Each trial is a fresh process training PPO (n_steps=1024, torch with 1 thread) for a given
number of timesteps, with:

- ``none``: no logging at all (the baseline);
- ``tensorboard``: SB3's own TensorBoard logger (``tensorboard_log=``);
- ``rlobs``: the rlobs callback with the run log, MLflow on the embedded SQLite store
  (the README's default) and OpenTelemetry to a local OTLP receiver — the sinks run in
  the log directory's shipper process; system metrics off;
- ``rlobs+system``: the same with system metrics sampled every ``--system-s`` seconds
  (default 1, ten times the default rate, so their cost shows if there is any).

Trials run in pairs of all modes, in a shuffled order per pair (A/B interleaved); after an
rlobs trial the harness waits, untimed, until its shipper has shipped everything and
exited, so no trial shares the machine with an earlier one's shipper. The table gives
the median wall time per mode and the median of the per-pair ratios to ``none``.

    python benchmarks/bench_sb3.py [--timesteps 16384 65536] [--pairs 5]
        [--modes none tensorboard rlobs rlobs+system] [--system-s 1]

The last column compares each mode with ``rlobs`` in the same pair.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODES = ("none", "tensorboard", "rlobs", "rlobs+system")


def train(mode: str, timesteps: int, directory: str, otlp: str, system_s: float) -> None:
    """One trial (in its own process)."""
    import torch

    torch.set_num_threads(1)
    if mode.startswith("rlobs"):
        os.environ.update({"RLOBS_SINKS": "jsonl,mlflow,otel", "RLOBS_JSONL_DIR": directory,
                           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
                           "RLOBS_SYSTEM_METRICS_S": str(system_s if "system" in mode else 0)})
    from stable_baselines3 import PPO

    kwargs = {"tensorboard_log": directory} if mode == "tensorboard" else {}
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=1024, seed=0, device="cpu", **kwargs)
    callback = None
    if mode.startswith("rlobs"):
        from rlobs.integrations.sb3 import RlobsCallback

        callback = RlobsCallback()
    model.learn(timesteps, callback=callback)


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP collector: takes every export, answers 200."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _trial(mode: str, timesteps: int, directory: Path, otlp: str, system_s: float) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", mode, "--timesteps", str(timesteps),
                    "--dir", str(directory), "--otlp", otlp, "--system-s", str(system_s)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    if mode.startswith("rlobs"):
        _wait_for_shipper(directory)
    return wall


def _wait_for_shipper(directory: Path) -> None:
    import rlobs
    from rlobs._records import shipper_statuses

    rlobs.sync([directory], timeout_s=600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
            r.get("exited") for r in shipper_statuses(directory)):
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[16_384, 65_536])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--system-s", type=float, default=1.0)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--dir")
    parser.add_argument("--otlp")
    args = parser.parse_args()
    if args.child:
        train(args.child, args.timesteps[0], args.dir, args.otlp, args.system_s)
        return 0
    os.environ["RLOBS_SHIPPER_IDLE_S"] = "1"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{server.server_address[1]}"
    rng = random.Random(0)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, PPO CartPole-v1, "
          f"n_steps=1024, torch 1 thread, {args.pairs} pairs per size, system metrics "
          f"every {args.system_s:g} s in rlobs+system\n")
    modes = list(dict.fromkeys(["none", *args.modes]))  # the baseline always runs
    print("| timesteps | mode | median wall s | × none (median of pairs) | × rlobs |")
    print("|---:|---|---:|---:|---:|")
    for timesteps in args.timesteps:
        walls: dict[str, list[float]] = {m: [] for m in modes}
        with tempfile.TemporaryDirectory() as scratch:
            for pair in range(args.pairs):
                order = list(modes)
                rng.shuffle(order)
                for mode in order:
                    directory = Path(scratch) / f"{mode}-{pair}"
                    directory.mkdir()
                    walls[mode].append(_trial(mode, timesteps, directory, otlp,
                                              args.system_s))
        for mode in modes:
            ratios = [w / base for w, base in zip(walls[mode], walls["none"], strict=True)]
            vs_rlobs = "–"
            if "rlobs" in walls:
                pairs = zip(walls[mode], walls["rlobs"], strict=True)
                vs_rlobs = f"{statistics.median(w / r for w, r in pairs):.3f}"
            print(f"| {timesteps:,} | {mode} | {statistics.median(walls[mode]):.2f} | "
                  f"{statistics.median(ratios):.3f} | {vs_rlobs} |", flush=True)
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
