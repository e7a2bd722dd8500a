"""``rlobs bench actor``: latency of the reference SAC actor on every backend.

For each batch size, each backend's actor is warmed up, then timed call by call in
interleaved rounds (a noisy neighbour slows every backend alike); the table gives mean,
p50, p95 and p99 in ms and the p50 speedup over eager measured in the same run. On CUDA
every timed call ends with ``torch.cuda.synchronize()``: the latency a caller that
reads the action sees. A second table measures what the wrapper itself costs per call.

torch is imported when the command runs, not when the CLI registers it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._exceptions import ConfigError
from .._sink import Sink

if TYPE_CHECKING:
    from rich.table import Table

    from .._run import Run
    from ._actor import CompiledActor

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
DEFAULT_BACKENDS = ("eager", "onnx", "export", "script", "compile", "auto")
DEFAULT_THREADS = 1
"""One torch thread: on a shared machine more threads wait on each other's cores, and the
figures wobble more than the backends differ."""

MAX_TAIL = 2.0
"""p95 / p50 above which a row's p50 is too noisy to compare: warned about."""
MAX_ROUND_SPREAD = 0.25
"""Spread of the per-round speedups, (max - min) / median, above which a ratio is not
reproducible within the run: warned about."""


class Row(NamedTuple):
    """One backend at one batch size."""

    backend: str
    runs: str
    """What actually ran (``auto`` shows its choice; a fallback shows eager)."""
    batch_size: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    speedup: float
    """eager p50 / this p50, same run."""
    round_spread: float = 0.0
    """(max - min) / median of the per-round speedups: how much the ratio moved between
    the interleaved rounds of this run."""


class _Discard(Sink):
    """Takes events and keeps nothing: the overhead table's span sink."""

    name = "discard"

    def __init__(self, wants_spans: bool) -> None:
        self.wants_spans = wants_spans


def _stats(samples_ns: Sequence[int]) -> tuple[float, float, float, float]:
    cuts = statistics.quantiles(samples_ns, n=100, method="inclusive")
    return (statistics.fmean(samples_ns) / 1e6, cuts[49] / 1e6, cuts[94] / 1e6,
            cuts[98] / 1e6)


def _time_calls(fn: Callable[..., Any], x: Any, calls: int, sync: Callable[[], None] | None,
                out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn(x)
        if sync is not None:
            sync()
        out.append(clock() - start)


def _actors(args: argparse.Namespace, model: Any, x: Any) -> dict[str, CompiledActor]:
    from ._actor import instrument

    # One static graph per batch size, as a deployed actor of fixed batch would compile.
    options: dict[str, dict[str, Any]] = {"compile": {"dynamic": False}}
    if args.freeze:
        options["script"] = {"freeze": True}
        options["onnx"] = options["export"] = {"check_weights": False}
    return {b: instrument(model, backend=b, method=args.method, example_inputs=(x,),
                          options=options) for b in args.backends}


def bench_batch(args: argparse.Namespace, model: Any, batch_size: int) -> list[Row]:
    """Time every backend at one batch size."""
    import torch

    x = torch.randn(batch_size, model.body[0].in_features, device=args.device)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else None
    with torch.inference_mode():
        actors = _actors(args, model, x)
        samples: dict[str, list[int]] = {b: [] for b in actors}
        round_p50: dict[str, list[float]] = {b: [] for b in actors}
        for actor in actors.values():
            _time_calls(actor, x, args.warmup, sync, [])
        per_round = max(2, args.calls // args.rounds)
        for _ in range(args.rounds):
            for backend, actor in actors.items():
                times: list[int] = []
                _time_calls(actor, x, per_round, sync, times)
                samples[backend].extend(times)
                round_p50[backend].append(statistics.median(times))
    stats = {b: _stats(s) for b, s in samples.items()}
    base = stats["eager"][1]
    return [Row(b, _runs(a), batch_size, *stats[b], base / stats[b][1],
                _spread(round_p50["eager"], round_p50[b])) for b, a in actors.items()]


def _spread(eager: Sequence[float], other: Sequence[float]) -> float:
    ratios = [e / o for e, o in zip(eager, other, strict=True) if o > 0]
    if len(ratios) < 2:
        return 0.0
    return (max(ratios) - min(ratios)) / statistics.median(ratios)


def noise_warnings(rows: Sequence[Row]) -> list[str]:
    """Rows whose speedup the run's own spread makes meaningless, one line each."""
    lines = []
    for r in rows:
        tail = r.p95_ms / r.p50_ms if r.p50_ms > 0 else float("inf")
        why = []
        if tail > MAX_TAIL:
            why.append(f"p95/p50 = {tail:.1f} (> {MAX_TAIL:g})")
        if r.backend != "eager" and r.round_spread > MAX_ROUND_SPREAD:
            why.append(f"its speedup moved {r.round_spread:.0%} between rounds "
                       f"(> {MAX_ROUND_SPREAD:.0%})")
        if why:
            lines.append(f"bs {r.batch_size} {r.backend}: {'; '.join(why)}")
    return lines


NOISE_ADVICE = ("the speedups of these rows (and of every row at a batch size whose eager "
                "row is listed) are not meaningful: rerun on a quieter machine or with more "
                "--rounds and --calls")


def _runs(actor: CompiledActor) -> str:
    if actor.fallback_reason:
        return f"eager (fallback: {actor.fallback_reason})"
    return actor.backend


def measure_overhead(calls: int, rounds: int = 15) -> dict[str, float]:
    """Per-call cost (µs) of a trivial actor: bare, wrapped without and with spans.

    Each case's best round: at ~1 µs per call, other processes' load on a shared machine
    is larger than the differences measured.
    """
    import torch

    from .._hub import Hub
    from ._actor import instrument

    x = torch.zeros(1, 28)
    actor = instrument(torch.nn.Identity(), backend="eager")
    hubs = [Hub([_Discard(wants)], heartbeat_s=0, handle_signals=False, provenance=False)
            for wants in (False, True)]
    # Started, not entered: entering would make them current for every case below.
    run_off, run_on = (hub.run(f"bench-overhead-{i}").start() for i, hub in enumerate(hubs))
    cases: dict[str, Callable[[], float]] = {
        "bare call (actor.fn)": lambda: _loop(actor.fn, x, calls),
        "wrapper, no current run": lambda: _loop(actor, x, calls),
        "wrapper, run without span sinks": lambda: _in_run(run_off, actor, x, calls),
        "wrapper, span recorded": lambda: _in_run(run_on, actor, x, calls),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(rounds):
            for name, case in cases.items():
                times[name].append(case())
    finally:
        for hub in hubs:
            hub.close()
    return {name: min(t) for name, t in times.items()}


def _loop(fn: Callable[..., Any], x: Any, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter_ns() - start) / calls / 1e3


def _in_run(run: Run, actor: CompiledActor, x: Any, calls: int) -> float:
    # The wrapper finds the run as the current one, as in a loop inside ``with run:``.
    from .._run import _current_run

    token = _current_run.set(run)
    try:
        return _loop(actor, x, calls)
    finally:
        _current_run.reset(token)


def results_table(rows: Sequence[Row], title: str) -> Table:
    """The latency table."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("bs", "backend", "runs", "mean ms", "p50 ms", "p95 ms", "p99 ms",
                   "× eager (p50)", "± rounds"):
        table.add_column(column, justify="left" if column in ("backend", "runs") else "right")
    for r in rows:
        table.add_row(str(r.batch_size), r.backend, r.runs, f"{r.mean_ms:.4f}",
                      f"{r.p50_ms:.4f}", f"{r.p95_ms:.4f}", f"{r.p99_ms:.4f}",
                      f"{r.speedup:.2f}", f"{r.round_spread:.0%}")
    return table


def overhead_table(overhead: dict[str, float]) -> Table:
    """The instrumentation-overhead table (µs per call; extra over the bare call)."""
    from rich.table import Table

    table = Table(title="instrumentation overhead (torch.nn.Identity, eager)")
    for column in ("call", "µs per call", "extra µs"):
        table.add_column(column, justify="left" if column == "call" else "right")
    bare = overhead["bare call (actor.fn)"]
    for name, us in overhead.items():
        table.add_row(name, f"{us:.3f}", f"{us - bare:+.3f}")
    return table


def summary_metrics(rows: Sequence[Row], overhead: dict[str, float] | None) -> dict[str, float]:
    """The results as flat run-level metrics (``<backend>.bs<n>.p50_ms`` …)."""
    metrics: dict[str, float] = {}
    for r in rows:
        key = f"{r.backend}.bs{r.batch_size}"
        metrics.update({f"{key}.mean_ms": r.mean_ms, f"{key}.p50_ms": r.p50_ms,
                        f"{key}.p95_ms": r.p95_ms, f"{key}.p99_ms": r.p99_ms,
                        f"{key}.speedup_p50": r.speedup})
    if overhead:
        bare = overhead["bare call (actor.fn)"]
        for name, slug in (("wrapper, run without span sinks", "no_spans"),
                           ("wrapper, span recorded", "spans")):
            metrics[f"overhead.{slug}_us"] = overhead[name] - bare
    return metrics


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive: {text!r}")
    return values


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {text!r}")
        return value
    return parse


def _csv_backends(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    known = ("auto", "onnx", "export", "script", "compile", "cudagraph", "eager")
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown backends {bad}; choose from {known}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the CLI and ``benchmarks/bench_actor.py``)."""
    parser.add_argument("--batch-sizes", type=_csv_ints, default=list(DEFAULT_BATCH_SIZES),
                        help="comma-separated (default 1,8,32,128)")
    parser.add_argument("--backends", type=_csv_backends, default=None,
                        help="comma-separated (default eager,onnx,export,script,compile,"
                        "auto; on CUDA onnx is left out and cudagraph added)")
    parser.add_argument("--method", default="forward", choices=("forward", "deterministic"),
                        help="actor method to time (default forward: mean and log-std, "
                        "the original table's call)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if "
                        "available)")
    parser.add_argument("--warmup", type=_at_least(0), default=500,
                        help="untimed calls per backend")
    parser.add_argument("--calls", type=_at_least(2), default=2000,
                        help="timed calls per backend")
    parser.add_argument("--rounds", type=_at_least(1), default=10,
                        help="interleaved timing rounds")
    parser.add_argument("--threads", type=_at_least(1), default=DEFAULT_THREADS,
                        help=f"torch.set_num_threads (default {DEFAULT_THREADS})")
    parser.add_argument("--overhead-calls", type=_at_least(0), default=100_000,
                        help="calls per round of the overhead table (0 skips it)")
    parser.add_argument("--freeze", action="store_true", help="script (and auto's script) "
                        "freezes and optimises for inference, and onnx/export skip their "
                        "per-call weight check, as a server of fixed weights would")
    parser.add_argument("--log", action="store_true", help="log the results as a run "
                        "(summary metrics) to the sinks the environment selects")


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; render and optionally log it."""
    import torch

    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # in-process callers keep their setting


def _run(args: argparse.Namespace) -> int:
    import torch

    from .._cli import console
    from ._sac import SACActor

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: torch sees no CUDA device")
    if args.backends is None:
        cuda = args.device.startswith("cuda")
        # ONNX Runtime's CPU package runs on CPU only; a CUDA actor would fall back.
        usual = [b for b in DEFAULT_BACKENDS[:-1] if not (cuda and b == "onnx")]
        args.backends = [*usual, *(["cudagraph"] if cuda else []), "auto"]
    if "eager" not in args.backends:
        args.backends = ["eager", *args.backends]  # the baseline of every speedup
    torch.manual_seed(0)
    model = SACActor().to(args.device).eval()
    frozen = " (script frozen)" if args.freeze else ""
    title = (f"SAC actor {args.method}{frozen} on {_device_name(args.device)}, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads, warm-up {args.warmup}"
             f", {args.rounds} × {max(2, args.calls // args.rounds)} timed calls")
    rows = [row for bs in args.batch_sizes for row in bench_batch(args, model, bs)]
    console().print(results_table(rows, title))
    noisy = noise_warnings(rows)
    if noisy:
        console().print(f"[yellow]warning:[/] {NOISE_ADVICE}:\n  " + "\n  ".join(noisy))
    overhead = measure_overhead(args.overhead_calls) if args.overhead_calls > 0 else None
    if overhead:
        console().print(overhead_table(overhead))
    if args.log:
        _log_results(args, rows, overhead, title)
    return 0


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return f"CPU ({platform.processor() or platform.machine()})"


def _log_results(args: argparse.Namespace, rows: Sequence[Row],
                 overhead: dict[str, float] | None, title: str) -> None:
    from .._cli import console, status_table
    from .._hub import Hub

    params = {k: v for k, v in vars(args).items() if k != "func"}
    with Hub.from_env() as hub:
        with hub.run("bench-actor", params=params, tags={"rlobs.bench": title}) as run:
            run.log_summary(summary_metrics(rows, overhead))
        console().print(status_table(hub))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs bench actor [...]``."""
    parser = sub.add_parser("bench", help="benchmarks (actor: compiled-actor latency)")
    kinds = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    actor = kinds.add_parser("actor", help="latency of the SAC actor per backend and batch "
                             "size, and the wrapper's own overhead")
    add_arguments(actor)
    actor.set_defaults(func=run_bench)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/bench_actor.py [...]``: the same benchmark without the CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    return run_bench(parser.parse_args(argv))
