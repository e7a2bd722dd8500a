"""``rlobs replay``: backfill sinks from run logs (after an outage, or a SIGKILL)."""

from __future__ import annotations

import argparse

from ._hub import Hub
from ._reader import read_run
from ._registry import parse_sink_names


def _cmd_replay(args: argparse.Namespace) -> int:
    from ._cli import console, status_table

    names = parse_sink_names(args.sinks)
    if "jsonl" in names:
        console().print("[yellow]note:[/yellow] skipping jsonl: the log is the source")
        names.remove("jsonl")
    with Hub(names, heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        unavailable = [s for s in hub.status() if not s.available]
        if unavailable:
            console().print(status_table(hub))
            return 1
        for path in args.paths:
            log = read_run(path)
            end = hub.replay(log)
            torn = " (torn last line skipped)" if log.torn_tail is not None else ""
            console().print(f"replayed {path}: {len(log.events)} events, "
                            f"status {end.status.value}{torn}")
        console().print(status_table(hub))
        return 0 if all(s.errors == 0 for s in hub.status()) else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs replay RUN.jsonl... --sinks mlflow``."""
    parser = sub.add_parser("replay", help="re-send recorded runs to sinks (idempotent for "
                            "sinks that keep state, e.g. mlflow)")
    parser.add_argument("paths", nargs="+", help="run .jsonl files")
    parser.add_argument("--sinks", required=True, help="comma-separated sink names")
    parser.set_defaults(func=_cmd_replay)
