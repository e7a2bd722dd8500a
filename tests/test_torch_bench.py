"""`rlobs bench actor`: runs end to end, renders its tables, logs its results as a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from rlobs._cli import main
from rlobs.torch._bench import Row, add_arguments, summary_metrics

TINY = ["bench", "actor", "--batch-sizes", "1,2", "--backends", "script,auto",
        "--warmup", "5", "--calls", "40", "--rounds", "2", "--overhead-calls", "200",
        "--threads", "1"]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_prints_every_backend_and_the_overhead(capsys: pytest.CaptureFixture[str],
                                                     ) -> None:
    """A tiny run prints rows for eager (always the baseline), script and auto."""
    assert main(TINY) == 0
    out = capsys.readouterr().out
    assert "1 threads" in out
    assert {"eager", "script", "auto", "wrapper, span recorded"} <= set(
        cell.strip() for line in out.splitlines() for cell in line.split("│"))


def test_bench_logs_summary_metrics_to_the_sinks(runs_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With --log the results land as summary metrics of a `bench-actor` run."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    assert main([*TINY, "--log"]) == 0
    (log,) = runs_dir.glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    metrics = {k for e in events if e["type"] == "run_update" for k in e["metrics"]}
    assert {"eager.bs1.p50_ms", "script.bs2.p99_ms", "auto.bs1.speedup_p50",
            "overhead.no_spans_us"} <= metrics


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_device_without_cuda_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--device cuda on a machine without CUDA exits 2 with a one-line error."""
    assert main(["bench", "actor", "--device", "cuda", "--overhead-calls", "0"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_summary_metrics_flatten_rows() -> None:
    """Rows flatten to `<backend>.bs<n>.<stat>` keys."""
    row = Row("script", "script", 8, 1.0, 0.5, 2.0, 3.0, 1.7)
    assert summary_metrics([row], None) == {
        "script.bs8.mean_ms": 1.0, "script.bs8.p50_ms": 0.5, "script.bs8.p95_ms": 2.0,
        "script.bs8.p99_ms": 3.0, "script.bs8.speedup_p50": 1.7}


def test_defaults_reproduce_the_original_table() -> None:
    """By default: batch sizes 1, 8, 32, 128; warm-up 500; 2000 timed calls."""
    args = _parse()
    assert (args.batch_sizes, args.warmup, args.calls) == ([1, 8, 32, 128], 500, 2000)


@pytest.mark.parametrize("argv", [["--batch-sizes", "1,x"], ["--batch-sizes", "0"],
                                  ["--backends", "eager,tensorrt"], ["--rounds", "0"],
                                  ["--calls", "1"], ["--threads", "two"]])
def test_bad_arguments_are_rejected(argv: list[str]) -> None:
    """Unknown backends, bad batch sizes and counts are usage errors."""
    with pytest.raises(SystemExit):
        _parse(*argv)
