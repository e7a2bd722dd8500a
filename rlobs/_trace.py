"""``rlobs export-trace``: a run log as a Chrome trace-event file (Perfetto, chrome://tracing).

The same tree the OpenTelemetry sink sends — run → step → span — as complete (``"X"``)
events, with no server. Each run is one process (``pid``). Slices on one track must nest
or be disjoint, and a viewer takes the slice around another as its parent, so events go on
track 1 when they nest there in their own parent — the run, its steps, their spans, each
span in the span the log records as its parent — and otherwise on the next track where
they do (spans of concurrent tasks or threads that overlap their siblings, a span that
crosses a step boundary; a span whose parent is elsewhere starts a track of its own rather
than sit in another task's span). Times are µs from the
earliest run's start; a step runs from the previous step (or the run's start) to its own
time, as in the OpenTelemetry sink.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._events import RunEnd, Span, Step
from ._reader import RunLog, read_run


def _slice(name: str, cat: str, start_ns: int, end_ns: int, origin_ns: int,
           args: dict[str, Any], key: Any = None, parent: Any = None) -> dict[str, Any]:
    end_ns = max(start_ns, end_ns)
    # "_start"/"_end": exact ns for track assignment (µs floats could round across bounds);
    # "_key"/"_parent": which slice this is and which one it must sit in.
    return {"name": name, "cat": cat, "ph": "X", "ts": (start_ns - origin_ns) / 1000,
            "dur": (end_ns - start_ns) / 1000, "args": args, "_start": start_ns,
            "_end": end_ns, "_key": key, "_parent": parent}


def _step_args(step: Step) -> dict[str, Any]:
    args: dict[str, Any] = {"step": step.step, "reward": step.reward,
                            "cumulative_reward": step.cumulative_reward,
                            "episode": step.episode, "done": step.done,
                            "truncated": step.truncated, **dict(step.metrics)}
    if step.episode_return is not None:
        args["episode_return"] = step.episode_return
    return args


def _span_args(span: Span) -> dict[str, Any]:
    args = {key: value if isinstance(value, str | int | float | bool) else str(value)
            for key, value in span.attributes.items()}
    args["step"] = span.step
    if span.error:
        args["error"] = span.error
    return args


def run_slices(log: RunLog, origin_ns: int) -> list[dict[str, Any]]:
    """The run, step and span slices of one run log (no ``pid``/``tid`` yet)."""
    start = log.start
    end_ns = log.end.time_ns if log.end is not None else log.last_seen_ns
    status = log.end.status.value if log.end is not None else "no end recorded"
    slices = [_slice(start.name, "run", start.time_ns, end_ns, origin_ns,
                     {"run_id": start.run_id, "status": status, **_end_args(log.end)},
                     ("run", None))]
    last = start.time_ns
    for event in log.events:
        if isinstance(event, Step):
            slices.append(_slice(f"step {event.step}", "step", last, event.time_ns, origin_ns,
                                 _step_args(event), ("step", event.step)))
            last = event.time_ns
        elif isinstance(event, Span):
            slices.append(_slice(event.name, "span", event.start_ns, event.end_ns, origin_ns,
                                 _span_args(event), ("span", event.span_id),
                                 ("span", event.parent_span_id) if event.parent_span_id
                                 else None))
    return slices


def _end_args(end: RunEnd | None) -> dict[str, Any]:
    if end is None:
        return {}
    return {"steps": end.steps, "total_reward": end.total_reward, "episodes": end.episodes,
            "error": end.error or ""}


def _fits(item: dict[str, Any], top: Any) -> bool:
    """Whether ``item`` may sit directly inside the slice ``top`` (``None``: none)."""
    if item["_parent"] is not None:  # a nested span: inside its own parent only
        return bool(top == item["_parent"])
    if item["cat"] == "span":  # a top-level span: inside a step or the run, not a span
        return top is None or top[0] != "span"
    return top is None or top[0] == "run"


def assign_tracks(slices: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each slice a ``tid`` so that slices on one track nest or are disjoint, and a
    span that nests on a track nests there in its own parent (the one its log records),
    never in another task's span that happens to enclose it in time."""
    ordered = sorted(slices, key=lambda s: (s["_start"], -s["_end"]))
    stacks: list[list[tuple[int, Any]]] = []  # per track: (end, key) of the open slices
    for item in ordered:
        start, end = item.pop("_start"), item.pop("_end")
        for track, stack in enumerate(stacks):
            while stack and stack[-1][0] <= start:
                stack.pop()
            top = stack[-1] if stack else None
            if (top is None or end <= top[0]) and _fits(item, top and top[1]):
                stack.append((end, item["_key"]))
                item["tid"] = track + 1
                break
        else:
            stacks.append([(end, item["_key"])])
            item["tid"] = len(stacks)
        del item["_key"], item["_parent"]
    return ordered


def trace_events(logs: Sequence[RunLog]) -> dict[str, Any]:
    """The Chrome trace-event document for some run logs, one process per run."""
    origin = min(log.start.time_ns for log in logs)
    events: list[dict[str, Any]] = []
    for pid, log in enumerate(logs, 1):
        events.append({"name": "process_name", "ph": "M", "pid": pid,
                       "args": {"name": f"{log.start.name} ({log.start.run_id})"}})
        for item in assign_tracks(run_slices(log, origin)):
            item["pid"] = pid
            events.append(item)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"origin_unix_ns": origin}}


def _cmd_export(args: argparse.Namespace) -> int:
    from ._cli import console
    from ._tally import resolve_run

    paths = [resolve_run(path) for path in args.paths]
    logs = [read_run(path) for path in paths]
    out = Path(args.output) if args.output else paths[0].with_suffix(".trace.json")
    document = trace_events(logs)
    out.write_text(json.dumps(document), encoding="utf-8")
    count = sum(1 for e in document["traceEvents"] if e["ph"] == "X")
    console().print(f"wrote {out}: {count} slices from {len(logs)} run(s); "
                    "open it in https://ui.perfetto.dev or chrome://tracing")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs export-trace RUN.jsonl... -o trace.json``."""
    parser = sub.add_parser("export-trace", help="write run logs as a Chrome trace-event "
                            "file (run → step → span) for Perfetto or chrome://tracing")
    parser.add_argument("paths", nargs="+", metavar="RUN", help="run .jsonl files (or a "
                        "directory: its latest run; or 'latest')")
    parser.add_argument("-o", "--output", help="output file (default: RUN.trace.json)")
    parser.set_defaults(func=_cmd_export)
