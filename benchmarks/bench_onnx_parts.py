"""Where a batch-1 call of the ``onnx`` actor backend spends its time, part by part.

The reference SAC actor (``rlobs.torch.SACActor``) at batch 1, 1 torch thread, inside
``torch.inference_mode()``: the eager module beside the ``onnx`` backend's entry (with and
without the per-call weight check), its compiled callable, ONNX Runtime's own
``run_with_iobinding`` and each piece the binding adds (the input copy, one output clone,
the weight check). Each row is the best of 7 rounds of back-to-back calls (a timer per
call would cost more than the smaller parts); the rows are not a per-call p50 as in
``rlobs bench actor``, they show how the compiled call divides.

    python benchmarks/bench_onnx_parts.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import operator
import time
from collections.abc import Callable
from typing import Any


def _best_us(fn: Callable[[], Any], calls: int, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - began) / calls / 1000)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    import torch

    from rlobs.torch import SACActor
    from rlobs.torch._onnx import OnnxShapes

    torch.set_num_threads(1)
    module = SACActor().eval()
    x = torch.randn(1, 28)
    with torch.inference_mode():
        checked = OnnxShapes(module, "forward")
        unchecked = OnnxShapes(module, "forward", check_weights=False)
        checked(x)
        unchecked(x)
        compiled = checked._last[3]
        cells = dict(zip(compiled.__code__.co_freevars,
                         (c.cell_contents for c in compiled.__closure__ or ()), strict=True))
        run, bound, options = cells["run"], cells["bound"], cells["run_options"]
        buffer, out = cells["buffer0"], cells["out0"]
        params, versions = checked._params, checked._versions
        version = operator.attrgetter("_version")
        parts: list[tuple[str, Callable[[], Any], int]] = [
            ("eager module(x)", lambda: module(x), args.calls // 5),
            ("onnx entry, weight check on (the default)", lambda: checked(x), args.calls),
            ("onnx entry, weight check off (--freeze)", lambda: unchecked(x), args.calls),
            ("compiled callable: copy in, run, 2 clones", lambda: compiled(x), args.calls),
            ("ONNX Runtime run_with_iobinding alone", lambda: run(bound, options),
             args.calls),
            ("input copy (copy_)", lambda: buffer.copy_(x), args.calls),
            ("one output clone", out.clone, args.calls),
            ("weight check (8 version counters)",
             lambda: list(map(version, params)) != versions, args.calls),
        ]
        rows = [(name, _best_us(fn, calls)) for name, fn, calls in parts]
    print(f"torch {torch.__version__}, 1 thread, SACActor 28→256→256→2×8, batch 1, "
          f"best of 7 rounds of {args.calls:,} calls\n")
    print("| part | µs per call |")
    print("|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.3f} |")
    eager, ort_run = rows[0][1], rows[4][1]
    print(f"\neager / ORT's own run: ×{eager / ort_run:.2f} (the bound for any binding "
          "of this graph, before a wrapper or a timer is added to either side)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
