"""Console sink: one live line per active run, and a summary table when a run ends.

On a terminal the lines refresh in place a few times a second (rich ``Live``); when the
output is not a terminal (CI logs, ``| tee``) a plain line per run is printed every
``interval_s`` instead. The sink runs on its own worker like any other, so rendering never
slows the agent loop; it takes no spans.

Each line shows steps, steps/s (over the last few seconds of event time), the rolling
mean step reward, episodes and the rolling mean episode return, and steps this sink
missed (gaps in step numbers). Given a hub (:meth:`ConsoleSink.watch`) it adds each
sink's drops and errors.

Environment: ``RLOBS_CONSOLE_INTERVAL_S`` (seconds between plain lines, default ``5``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rlobs import RunEnd, RunStart, RunTally, Sink, SinkStatus, Step, env_float, wall_ns

RLOBS_CONSOLE_INTERVAL_S = "RLOBS_CONSOLE_INTERVAL_S"
"""Seconds between plain progress lines when the output is not a terminal. Default ``5``."""

_RATE_WINDOW_NS = 3_000_000_000


def episode_returns_of(step: Step) -> list[float]:
    """The episode returns a step ends: its own, or a vector env's per-env ones."""
    return list(RunTally(history=False).add_step(step))


def number(value: float) -> str:
    """A figure as the console prints it: 4 significant digits, thousands separated,
    whole numbers without a fraction (``0.7867``, ``303.3``, ``12,000``)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


class SerialConsole(Console):
    """A console that renders for one thread at a time.

    Rich computes where a live display's cursor must go back to, then writes the text
    that follows from a per-thread buffer when the outermost ``with console`` block
    exits. When the user prints (through the live display's stdout proxy) while the
    sink's worker refreshes, the two interleave and a stale live line stays on screen.
    Holding the console's lock for each whole block — and giving the live display that
    same lock — keeps each cursor move and its text together.
    """

    def __enter__(self) -> SerialConsole:
        self._lock.acquire()
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._lock.release()


@dataclass
class RunBoard:
    """What the console knows about one run."""

    run_id: str
    name: str
    start_ns: int
    window: int
    missed: int = 0
    last_ns: int = 0
    best_return: float | None = None
    tally: RunTally = field(init=False)
    rewards: deque[float] = field(init=False)
    returns: deque[float] = field(init=False)
    marks: deque[tuple[int, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.tally = RunTally(history=False)
        self.rewards = deque(maxlen=self.window)
        self.returns = deque(maxlen=self.window)

    @property
    def steps(self) -> int:
        """Steps so far (the last step's index + 1)."""
        return self.tally.steps

    @property
    def episodes(self) -> int:
        """Episodes ended so far (vector envs: one per sub-env episode)."""
        return self.tally.episode_count

    @property
    def total_reward(self) -> float:
        """The run's cumulative reward."""
        return self.tally.total_reward

    def add(self, step: Step) -> None:
        """Account one step (on the sink's worker, once per step: kept lean)."""
        index = step.step
        first = index - step.env_steps + 1  # a record may stand for many env steps
        if first > self.tally.steps:
            self.missed += first - self.tally.steps
        self.last_ns = step.time_ns
        self.rewards.append(step.reward)
        for ret in self.tally.add_step(step):
            self.best_return = ret if self.best_return is None else max(self.best_return, ret)
            self.returns.append(ret)

    def rate(self) -> float:
        """Steps per second over the last few seconds of event time."""
        marks = self.marks
        if not marks or marks[-1] != (self.last_ns, self.steps):
            marks.append((self.last_ns, self.steps))
        while len(marks) > 2 and marks[-1][0] - marks[1][0] >= _RATE_WINDOW_NS:
            marks.popleft()
        if len(marks) < 2 or marks[-1][0] == marks[0][0]:
            return 0.0
        (t0, s0), (t1, s1) = marks[0], marks[-1]
        return (s1 - s0) / ((t1 - t0) / 1e9)

    def line(self, sinks: str = "") -> Text:
        """The run's one-line view."""
        mean_reward = sum(self.rewards) / len(self.rewards) if self.rewards else 0.0
        text = Text.assemble((f"{self.name}", "bold"), (f" {self.run_id[-8:]}", "dim"),
                             f"  steps {self.steps:,}  {self.rate():,.0f}/s",
                             f"  reward(avg {len(self.rewards)}) {number(mean_reward)}",
                             f"  episodes {self.episodes:,}")
        if self.returns:
            text.append(f"  return(avg {len(self.returns)}) "
                        f"{number(sum(self.returns) / len(self.returns))}")
        if self.missed:
            text.append(f"  missed {self.missed:,}", "yellow")
        if sinks:
            text.append(f"  {sinks}", "red")
        return text


def summary_table(board: RunBoard, end: RunEnd) -> Table:
    """The table printed when a run ends."""
    style = {"finished": "green", "failed": "red"}.get(end.status.value, "yellow")
    table = Table(title=f"run {board.name} ended", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    rate = end.steps / end.duration_s if end.duration_s > 0 else 0.0
    rows: list[tuple[str, str | Text]] = [
        ("run id", end.run_id),
        ("status", Text(end.status.value + (f": {end.error}" if end.error else ""), style)),
        ("duration", f"{end.duration_s:.2f} s"),
        ("steps", f"{end.steps:,} ({rate:,.0f}/s)"),
        ("total reward", number(end.total_reward)),
        ("episodes", f"{board.episodes:,}"),
    ]
    if board.returns and board.best_return is not None:
        rows.append((f"mean return (last {len(board.returns)})",
                     number(sum(board.returns) / len(board.returns))))
        rows.append(("best return", number(board.best_return)))
    if end.dropped or end.rejected or board.missed:
        drops = ", ".join(f"{k} {v:,}" for k, v in end.dropped.items()) or "none"
        rows.append(("dropped", f"{drops}; rejected values {end.rejected:,}"))
    for label, value in rows:
        table.add_row(label, value)
    return table


class ConsoleSink(Sink):
    """Shows active runs on the console (see the module docstring).

    Args:
        file: where to write; default standard output.
        refresh_s: seconds between live refreshes on a terminal.
        interval_s: seconds between plain lines when not on a terminal.
        window: steps (and episodes) the rolling means cover.
        terminal: force (``True``) or refuse (``False``) live rendering; default: whether
            ``file`` is a terminal.
    """

    name = "console"
    wants_spans = False
    flush_interval_s = 0.25

    def __init__(self, file: IO[str] | None = None, *, refresh_s: float = 0.25,
                 interval_s: float = 5.0, window: int = 100,
                 terminal: bool | None = None) -> None:
        self.console = SerialConsole(file=file or sys.stdout, force_terminal=terminal,
                                     highlight=False)
        self.live_mode = self.console.is_terminal if terminal is None else terminal
        self.refresh_s = refresh_s
        self.interval_s = interval_s
        self.window = window
        self.boards: dict[str, RunBoard] = {}
        self._status: Callable[[], Sequence[SinkStatus]] | None = None
        self._live: Live | None = None
        self._next_ns = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsoleSink:
        return cls(interval_s=env_float(RLOBS_CONSOLE_INTERVAL_S, 5.0, env=env))

    def watch(self, hub: Any) -> ConsoleSink:
        """Show the drops and errors of ``hub``'s sinks on each line."""
        self._status = hub.status
        return self

    def open(self) -> None:
        if self.live_mode:
            self._live = Live(console=self.console, auto_refresh=False, transient=True)
            self._live._lock = self.console._lock  # one lock: see SerialConsole
            self._live.start()

    def on_run_start(self, event: RunStart) -> None:
        board = RunBoard(event.run_id, event.name, event.time_ns, self.window,
                         last_ns=event.time_ns)
        board.tally.add(event)
        board.tally.steps = event.resumed_at or 0  # a resumed run's steps continue
        self.boards[event.run_id] = board
        if not self.live_mode:
            self.console.print(f"run {event.name} ({event.run_id}) started")

    def on_step(self, event: Step) -> None:
        board = self.boards.get(event.run_id)
        if board is not None:
            board.add(event)

    def on_run_end(self, event: RunEnd) -> None:
        board = self.boards.pop(event.run_id, None)
        if board is None:
            return
        if self._live is not None:
            self._render()  # drop its live line
        else:
            self.console.print(board.line(self._sink_health()), soft_wrap=True)
        self.console.print(summary_table(board, event))

    def flush(self) -> None:
        now = wall_ns()
        if now < self._next_ns:
            return
        self._next_ns = now + int((self.refresh_s if self.live_mode else self.interval_s) * 1e9)
        self._render()

    def _render(self) -> None:
        sinks = self._sink_health()
        lines = [board.line(sinks) for board in self.boards.values()]
        if self._live is not None:
            self._live.update(Group(*lines), refresh=True)
        else:
            for line in lines:
                self.console.print(line, soft_wrap=True)

    def _sink_health(self) -> str:
        if self._status is None:
            return ""
        bad = [f"{s.name}: dropped {s.dropped} errors {s.errors}"
               for s in self._status() if s.dropped or s.errors]
        return "; ".join(bad)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def detail(self) -> str | None:
        return f"{len(self.boards)} active run(s), {'live' if self.live_mode else 'plain'}"
