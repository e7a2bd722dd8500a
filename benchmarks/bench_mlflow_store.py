"""What MLflow's own store costs per metric value: the floor under the MLflow sink.

The shipper sends step values with ``MlflowClient.log_batch`` into the embedded SQLite
store (the README's default). This times that call alone, in a fresh process per row, for
batches of 50 to 1,000 values (two keys a step, as a run's ``step_reward`` and
``cumulative_reward``), with the collector as it is and with the heap frozen after MLflow
was imported and its store opened (``gc.freeze()``, which the shipper does once its sinks
are open): MLflow's ORM allocates a dozen objects per value, whose collections otherwise
rescan every object importing MLflow made.

    python benchmarks/bench_mlflow_store.py [--values 20000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCHES = (50, 100, 250, 500, 1000)


def measure(store: Path, batch: int, values: int, frozen: bool) -> float:
    """CPU µs per value of ``values`` values logged ``batch`` at a time (in this process)."""
    import gc

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    run_id = client.create_run(client.create_experiment("bench")).info.run_id
    if frozen:
        gc.freeze()
    step = 0
    began = time.process_time()
    sent = 0
    while sent < values:
        metrics = []
        while len(metrics) < batch:
            stamp = 1_700_000_000_000 + step
            metrics += [Metric("step_reward", 1.0, stamp, step),
                        Metric("cumulative_reward", float(step), stamp, step)]
            step += 1
        client.log_batch(run_id, metrics=metrics, synchronous=True)
        sent += len(metrics)
    return (time.process_time() - began) / sent * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=int, default=20_000)
    parser.add_argument("--child", nargs=3, metavar=("STORE", "BATCH", "FROZEN"))
    args = parser.parse_args()
    if args.child:
        store, batch, frozen = args.child
        print(measure(Path(store), int(batch), args.values, frozen == "1"))
        return 0
    print(f"python {sys.version.split()[0]}, {args.values:,} values per row, "
          "CPU µs per value, a fresh process and SQLite store per cell\n")
    print("| values per log_batch | collector as is | heap frozen |")
    print("|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for batch in BATCHES:
            cells = []
            for frozen in ("0", "1"):
                store = Path(scratch) / f"{batch}-{frozen}.db"
                done = subprocess.run(
                    [sys.executable, __file__, "--values", str(args.values), "--child",
                     str(store), str(batch), frozen],
                    check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                cells.append(float(done.stdout.strip().splitlines()[-1]))
            print(f"| {batch:,} | {cells[0]:.1f} | {cells[1]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
