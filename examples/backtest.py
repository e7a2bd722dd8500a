"""A backtest-style, one-shot result: stats as metrics, curve CSV + PNG, trades CSV.

A moving-average crossover strategy on a synthetic random-walk price. Nothing is logged
per step: the result is logged once, when known, through the run API
(``log_summary`` for the statistics, ``log_artifact`` for the files).

    python examples/backtest.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
import tempfile
from pathlib import Path

import rlobs

PARAMS = {"fast": 10, "slow": 40, "bars": 1_000, "seed": 7, "cost_bps": 2.0}


def prices(bars: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = [100.0]
    for _ in range(bars - 1):
        out.append(out[-1] * math.exp(rng.gauss(0.0002, 0.01)))
    return out


def backtest(series: list[float], fast: int, slow: int, cost_bps: float
             ) -> tuple[list[float], list[dict[str, float]]]:
    """Long when the fast mean is above the slow one. Returns equity curve and trades."""
    equity, position, entry = [1.0], 0, 0.0
    trades: list[dict[str, float]] = []
    for t in range(1, len(series)):
        ret = series[t] / series[t - 1] - 1
        equity.append(equity[-1] * (1 + position * ret))
        if t < slow:
            continue
        want = int(sum(series[t - fast:t]) / fast > sum(series[t - slow:t]) / slow)
        if want != position:
            equity[-1] *= 1 - cost_bps / 1e4
            if want:
                entry = series[t]
            else:
                trades.append({"exit_bar": t, "entry": entry, "exit": series[t],
                               "pnl": series[t] / entry - 1})
            position = want
    return equity, trades


def stats(equity: list[float], trades: list[dict[str, float]]) -> dict[str, float]:
    rets = [b / a - 1 for a, b in itertools.pairwise(equity)]
    mean = sum(rets) / len(rets)
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
    peak, drawdown = equity[0], 0.0
    for value in equity:
        peak = max(peak, value)
        drawdown = max(drawdown, 1 - value / peak)
    wins = sum(1 for t in trades if t["pnl"] > 0)
    return {"total_return": equity[-1] - 1, "sharpe": mean / std * math.sqrt(252) if std else 0,
            "max_drawdown": drawdown, "trades": len(trades),
            "win_rate": wins / len(trades) if trades else 0.0}


def write_files(out: Path, equity: list[float], trades: list[dict[str, float]]) -> list[Path]:
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    curve, trade_file, png = out / "equity.csv", out / "trades.csv", out / "equity.png"
    with curve.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["bar", "equity"])
        writer.writerows(enumerate(equity))
    with trade_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["exit_bar", "entry", "exit", "pnl"])
        writer.writeheader()
        writer.writerows(trades)
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(equity, lw=1.2)
    ax.set(title="equity curve", xlabel="bar", ylabel="equity (start = 1)")
    ax.grid(alpha=0.3)
    fig.savefig(png, dpi=100)
    return [curve, png, trade_file]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="backtest-"))
    with rlobs.run("backtest-macross", params=PARAMS, tags={"strategy": "ma-cross"}) as run:
        equity, trades = backtest(prices(PARAMS["bars"], PARAMS["seed"]), PARAMS["fast"],
                                  PARAMS["slow"], PARAMS["cost_bps"])
        result = stats(equity, trades)
        run.log_summary(result)
        for path in write_files(out, equity, trades):
            run.log_artifact(path, "backtest")
    print(f"run {run.run_id}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
