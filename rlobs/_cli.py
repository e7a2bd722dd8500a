"""The ``rlobs`` command line. Commands register through the ``rlobs.commands`` entry
point group (``name = "module:register"``, where ``register(subparsers)`` adds a parser
whose ``func(args) -> int`` runs it), so a sink package can add its own."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import environment_variables as ev
from ._exceptions import RlobsError
from ._hub import Hub
from ._log import NAME as LOGGER_NAME
from ._params import redact_uri
from ._reader import RunLog, read_run
from ._records import deliveries, delivery_file, shipper_statuses
from ._registry import registered_sinks, selected_names
from ._sink import Sink
from ._tally import LATEST, RESULT_PREFIX, RunTally, log_dir, resolve_run

COMMANDS = "rlobs.commands"

_console = Console(highlight=False, soft_wrap=True)  # paths and ids are never cut
_errors = Console(stderr=True, highlight=False)

_STATUS_VARS = (ev.RLOBS_SINKS, ev.RLOBS_JSONL_DIR, "MLFLOW_TRACKING_URI",
                "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def console() -> Console:
    """The console commands print to."""
    return _console


def errors() -> Console:
    """The console for errors and notices (standard error)."""
    return _errors


def status_table(hub: Hub, *, probes: Mapping[str, str | None] | None = None,
                 shipped: Mapping[str, tuple[int, int]] | None = None) -> Table:
    """A table of a hub's sinks: availability, detail and counters.

    Args:
        hub: the hub whose sinks to show.
        probes: per sink, :meth:`rlobs.Sink.probe`'s answer (a reason marks it not
            available).
        shipped: per sink, (delivered, lost) over the log directory's runs, which replace
            the hub's own counters (a status hub ships nothing itself).
    """
    table = Table(title="sinks")
    for column in ("sink", "available", "detail", "delivered", "dropped", "errors"):
        # fold, never truncate: a detail is often a path or URI that matters whole
        table.add_column(column, overflow="fold")
    for s in hub.status():
        why = (probes or {}).get(s.name)
        delivered, dropped = (shipped or {}).get(s.name, (s.delivered, s.dropped))
        table.add_row(s.name, "yes" if s.available and not why else "[red]no[/red]",
                      escape(redact_uri(why or s.detail or "")), f"{delivered:,}",
                      f"{dropped:,}",
                      str(s.errors) + (f" ({s.last_error})" if s.last_error else ""))
    return table


def probe_all(hub: Hub) -> dict[str, str | None]:
    """Each sink's :meth:`rlobs.Sink.probe` answer, checked side by side (each bounded
    by the sink); a probe that raises says so."""
    def one(sink: Sink) -> str | None:
        try:
            return sink.probe()
        except Exception as exc:  # a plug-in's probe must not break status
            return f"probe failed: {type(exc).__name__}: {exc}"

    sinks = [s for s in hub.sinks if s.enabled]
    with ThreadPoolExecutor(max_workers=max(1, len(sinks))) as pool:
        return dict(zip([s.name for s in sinks], pool.map(one, sinks), strict=True))


def shipped_counts(directory: Path) -> dict[str, tuple[int, int]]:
    """Per sink, (events delivered, values lost) over the runs of ``directory``: a live
    shipper's report where one ships the run, else the run's delivery record."""
    per_run: dict[tuple[str, str], dict[str, Any]] = {}
    for path in delivery_file(directory, "_").parent.glob("*.json"):
        for sink, entry in deliveries(directory, path.stem).items():
            per_run[(path.stem, sink)] = entry
    for report in shipper_statuses(directory):
        if report.get("exited") or not _pid_alive(int(report.get("pid", 0))):
            continue  # its runs' records are final
        for run_id, run in report.get("runs", {}).items():
            for sink, entry in run.get("sinks", {}).items():
                per_run[(run_id, sink)] = entry
    out: dict[str, tuple[int, int]] = {}
    for (_, sink), entry in per_run.items():
        delivered, lost = out.get(sink, (0, 0))
        out[sink] = (delivered + int(entry.get("delivered", 0)),
                     lost + int(entry.get("lost", 0)))
    return out


def _cmd_status(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.dir is not None:
        if not Path(args.dir).is_dir():
            raise RlobsError(f"no such log directory: {args.dir}")
        env[ev.RLOBS_JSONL_DIR] = args.dir  # its sinks as a run writing there has them
    for name in _STATUS_VARS:
        value = env.get(name)
        _console.print(f"{name}={redact_uri(value) if value is not None else '(unset)'}")
    names = selected_names(env)
    _console.print(f"selected sinks: {', '.join(names) or '(none)'}; "
                   f"registered: {', '.join(sorted(registered_sinks()))}")
    directory = log_dir(env)
    # Every sink opened here, to say whether it can run at all; no shipper is started.
    with Hub(names, heartbeat_s=0, handle_signals=False, shipper=False, env=env) as hub:
        probes = probe_all(hub)
        _console.print(status_table(hub, probes=probes, shipped=shipped_counts(directory)))
        ok = all(s.available and not probes.get(s.name) for s in hub.status())
    for table in shipper_tables(directory):
        _console.print(table)
    return 0 if ok else 1


def shipper_tables(directory: Path) -> list[Table | str]:
    """What each shipper of ``directory`` reports: per run and sink, its state and what
    is left to ship (log not yet read, values not yet confirmed), then what is missing."""
    out: list[Table | str] = []
    for report in shipper_statuses(directory):
        alive = not report.get("exited") and _pid_alive(int(report.get("pid", 0)))
        when = dt.datetime.fromtimestamp(float(report.get("updated", 0))).strftime("%H:%M:%S")
        table = Table(title=f"shipper pid {report.get('pid')} "
                      f"({'running' if alive else 'exited'}, report of {when}, "
                      f"{int(report.get('rss_bytes', 0)) / 2**20:.0f} MB, "
                      f"{float(report.get('cpu_s', 0)):.1f} s CPU)")
        table.add_column("run", no_wrap=True)
        for column in ("sink", "state", "left to ship", "lost"):
            table.add_column(column, no_wrap=True)
        missing = []
        for run_id, run in sorted(report.get("runs", {}).items()):
            for sink, entry in sorted(run.get("sinks", {}).items()):
                left = (f"{int(entry.get('unread_bytes', 0)) / 1024:.0f} KiB, "
                        f"{entry.get('pending', 0)} values")
                table.add_row(run_id, sink, str(entry.get("state", "")), left,
                              str(entry.get("lost", 0)))
                if entry.get("missing"):
                    missing.append(f"{run_id} → {sink}: {redact_uri(entry['missing'])}")
        out += [table, *missing]
    return out


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs status``."""
    parser = sub.add_parser("status", help="which sinks the environment selects, whether "
                            "each is available and its server reachable (exit 1 if one is "
                            "not), what reached each, and what the shipper still has to "
                            "ship, per run and sink")
    parser.add_argument("dir", metavar="DIR", nargs="?", default=None,
                        help="the log directory (default: RLOBS_JSONL_DIR)")
    parser.set_defaults(func=_cmd_status)


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="seconds")


def number(value: float) -> str:
    """A figure as the CLI and the console print it: 4 significant digits, thousands
    separated, integers as integers (``0.7867``, ``303.3``, ``12,000``)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def summary_rows(log: RunLog | RunTally) -> list[tuple[str, str]]:
    """Label/value rows that summarise a run log (see :mod:`rlobs._tally`)."""
    t = log if isinstance(log, RunTally) else RunTally.of(log)
    rows = [("run", f"{t.name} ({t.run_id})"), ("started", _when(t.started_ns))]
    if t.parent_id:
        rows.append(("parent", t.parent_id))
    if t.segments > 1:
        rows.append(("segments", f"{t.segments} (the run id was reused: resumed)"))
    end = t.end
    if end is None:
        rows.append(("status", f"no end recorded (last sign of life {_when(t.last_ns)})"))
    else:
        rows.append(("status", end.status.value + (f": {end.error}" if end.error else "")))
    rows += [("duration", f"{t.duration_s:.3f} s"), ("steps", f"{t.steps:,}"),
             ("total reward", number(t.total_reward)), ("episodes", f"{t.episode_count:,}")]
    if t.episodes:
        returns = [r for _, r in t.episodes]
        rows.append(("mean episode return", number(sum(returns) / len(returns))))
    if t.dropped or t.rejected:
        drops = ", ".join(f"{k}: {v:,}" for k, v in t.dropped.items()) or "none"
        rows.append(("dropped", f"{drops}; rejected values: {t.rejected:,}"))
    rows.append(("spans", f"{t.spans:,}"))
    rows += [(f"summary {k}", number(v)) for k, v in sorted(t.summaries.items())]
    rows += [(f"result {k[len(RESULT_PREFIX):]}", v) for k, v in sorted(t.tags.items())
             if k.startswith(RESULT_PREFIX)]
    if t.artifacts:
        rows.append(("artifacts", ", ".join(t.artifacts)))
    for child in t.children():
        rows.append(("child", f"{child.name} ({child.run_id})"))
    if t.path is not None:
        rows += _delivery_rows(t.path.parent, t.run_id)
    if isinstance(log, RunLog) and (log.torn_tail is not None or log.bad_lines):
        rows.append(("damage", f"torn last line: {log.torn_tail is not None}; "
                              f"unreadable lines: {list(log.bad_lines)}"))
    return rows


def _delivery_rows(directory: Path, run_id: str) -> list[tuple[str, str]]:
    rows = []
    for sink, entry in sorted(deliveries(directory, run_id).items()):
        lost = f", {entry.get('lost')} lost" if entry.get("lost") else ""
        missing = f" — missing: {entry['missing']}" if entry.get("missing") else ""
        rows.append((f"→ {sink}", f"{entry.get('state')} ({entry.get('delivered', 0)} "
                                  f"events{lost}){missing}"))
    return rows


def _cmd_show(args: argparse.Namespace) -> int:
    path = resolve_run(args.path)
    log = read_run(path)
    table = Table(show_header=False, title=str(path))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in summary_rows(log):
        table.add_row(label, value)
    _console.print(table)
    return 0


def register_show(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs show RUN``."""
    parser = sub.add_parser("show", help="summarise a run: status, steps, episodes, "
                            "summaries, results, children, deliveries")
    parser.add_argument("path", metavar="RUN", nargs="?", default=LATEST,
                        help="a run's .jsonl file, a directory (its latest run), a run "
                        "id, or 'latest' (the default: the latest run of RLOBS_JSONL_DIR)")
    parser.set_defaults(func=_cmd_show)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered command."""
    parser = argparse.ArgumentParser(prog="rlobs", description="Observability hub for agent "
                                     "runs: inspect sinks and run logs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    broken = []
    for entry in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        try:
            entry.load()(sub)
        except Exception as exc:  # one broken plug-in must not hide the others
            broken.append(f"{entry.name} ({type(exc).__name__}: {exc})")
    if broken:
        parser.epilog = "unavailable commands: " + "; ".join(broken)
    return parser


class _ErrorsHandler(logging.Handler):
    """Renders rlobs' warnings and errors on the CLI's stderr console (never stdout)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            _errors.print(f"[{style}]{record.levelname.lower()}:[/{style}] "
                          f"{escape(record.getMessage())}")
        except Exception:
            self.handleError(record)


def configure_logging() -> None:
    """Give rlobs' log records the CLI's own rendering on stderr, unless logging is
    configured already (an application calling ``main`` keeps its handlers)."""
    log = logging.getLogger(LOGGER_NAME)
    if logging.getLogger().handlers or any(isinstance(h, _ErrorsHandler) for h in log.handlers):
        return
    if not log.handlers:
        handler = _ErrorsHandler(logging.WARNING)
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlobs`` console script."""
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RlobsError as exc:
        _errors.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    except OSError as exc:  # a path that is a directory, unreadable, on a full disk...
        where = f": {exc.filename}" if exc.filename else ""
        _errors.print(f"[red]error:[/red] {escape(str(exc.strerror or exc) + where)}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
