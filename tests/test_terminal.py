"""What a person sees on a real terminal (tmux): the console sink's live line and summary,
and ``rlobs tail``, read back from the pane with ``capture-pane``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]

USER_LOOP = """
import time, rlobs
with rlobs.Hub(["console"], heartbeat_s=0, handle_signals=False, shipper=False) as hub:
    with hub.run("cartpole") as run:
        print("hello from the user")
        for i in range(300):
            run.step(0.786667, {"loss": 303.349}, done=(i % 50 == 49))
            time.sleep(0.004)
        print("user again")
print("after the run")
"""

SLOW_WRITER = """
import time, rlobs
with rlobs.Hub(["jsonl"], heartbeat_s=0, handle_signals=False) as hub:
    with hub.run("walker", run_id="walker") as run:
        for i in range(400):
            run.step(0.5, done=(i % 40 == 39))
            time.sleep(0.01)
"""


class Pane:
    """One tmux server and window running a command; read with :meth:`screen`."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.socket = f"rlobs-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self._tmux("new-session", "-d", "-x", "150", "-y", "45",
                   f"cd {shlex.quote(str(ROOT))} && env {exports} {command}; "
                   "echo '[pane done]'; sleep 120")

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                             text=True, timeout=30, check=True)
        return out.stdout

    def screen(self) -> list[str]:
        """The pane's lines as a person sees them (trailing blanks dropped)."""
        lines = self._tmux("capture-pane", "-p", "-J", "-t", "0").splitlines()
        return [line.rstrip() for line in lines if line.strip()]

    def wait_for(self, text: str, timeout_s: float = 90) -> list[str]:
        """The screen once ``text`` is on it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(text in line for line in lines):
                return lines
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; screen:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30, check=False)


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "RLOBS_JSONL_DIR": str(tmp_path), "TERM": "xterm-256color",
            "RLOBS_SINKS": "jsonl"}


@pytest.fixture
def panes() -> Iterator[list[Pane]]:
    made: list[Pane] = []
    yield made
    for pane in made:
        pane.close()


def test_console_sink_on_a_terminal_leaves_no_stale_line(
        tmp_path: Path, panes: list[Pane]) -> None:
    """The user prints right after the run starts and again later: each print is a line
    of its own, no live line is left behind, and the summary has even figures."""
    script = tmp_path / "loop.py"
    script.write_text(USER_LOOP)
    pane = Pane(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", _env(tmp_path))
    panes.append(pane)
    screen = pane.wait_for("[pane done]")
    assert "hello from the user" in screen and "user again" in screen
    assert "after the run" in screen
    assert not [line for line in screen if "reward(avg" in line], screen  # no live line
    table = {cells[0]: cells[1] for line in screen
             if len(cells := [c.strip() for c in line.split("│") if c.strip()]) == 2}
    assert table["status"] == "finished" and table["episodes"] == "6"
    assert table["total reward"] == "236"  # 300 × 0.786667, 4 significant digits
    assert table["mean return (last 6)"] == "39.33"


def test_tail_on_a_terminal_shows_the_live_line_then_the_summary(
        tmp_path: Path, panes: list[Pane]) -> None:
    """``rlobs tail`` of a directory: a live line that counts up while the run goes,
    replaced by the summary table when it ends."""
    env = _env(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER], cwd=ROOT,
                              env={**os.environ, **env})
    try:
        pane = Pane(f"{shlex.quote(sys.executable)} -m rlobs tail {shlex.quote(str(tmp_path))}"
                    " --timeout 60", env)
        panes.append(pane)
        live = pane.wait_for("walker")
        assert any("steps" in line and "episodes" in line for line in live), live
        screen = pane.wait_for("[pane done]")
    finally:
        writer.wait(timeout=90)
    assert any("run walker ended" in line for line in screen), screen
    assert not [line for line in screen if "/s  reward" in line], screen  # live line gone
    table = {cells[0]: cells[1] for line in screen
             if len(cells := [c.strip() for c in line.split("│") if c.strip()]) == 2}
    assert table["steps"].startswith("400 ") and table["episodes"] == "10"
