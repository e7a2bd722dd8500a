"""`rlobs bench actor`: runs end to end, renders its tables, logs its results as a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from rlobs._cli import main
from rlobs.torch._bench import Row, add_arguments, noise_warnings, summary_metrics

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
    """By default: batch sizes 1, 8, 32, 128; warm-up 500; 2000 timed calls; 1 thread."""
    args = _parse()
    assert (args.batch_sizes, args.warmup, args.calls, args.threads) == (
        [1, 8, 32, 128], 500, 2000, 1)


def test_new_backends_are_accepted() -> None:
    """--backends takes onnx and export."""
    assert _parse("--backends", "onnx,export").backends == ["onnx", "export"]


def test_noisy_rows_are_warned_about() -> None:
    """A long tail or a speedup that moved between rounds is named; a steady row is not."""
    steady = Row("onnx", "onnx", 1, 0.011, 0.010, 0.012, 0.02, 3.5, 0.05)
    tail = Row("onnx", "onnx", 8, 0.05, 0.010, 0.030, 0.05, 3.5, 0.05)
    moved = Row("script", "script", 1, 0.02, 0.020, 0.022, 0.03, 1.8, 0.40)
    lines = noise_warnings([steady, tail, moved])
    assert len(lines) == 2
    assert lines[0].startswith("bs 8 onnx: p95/p50 = 3.0")
    assert lines[1] == "bs 1 script: its speedup moved 40% between rounds (> 25%)"


@pytest.mark.parametrize("argv", [["--batch-sizes", "1,x"], ["--batch-sizes", "0"],
                                  ["--backends", "eager,tensorrt"], ["--rounds", "0"],
                                  ["--calls", "1"], ["--threads", "two"]])
def test_bad_arguments_are_rejected(argv: list[str]) -> None:
    """Unknown backends, bad batch sizes and counts are usage errors."""
    with pytest.raises(SystemExit):
        _parse(*argv)
