"""rlobs logs through the standard library: nothing on stdout, warnings on stderr on a
doubling count per cause, filterable by the ``rlobs`` name; the CLI renders its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOOP = """
import logging, sys, rlobs
if sys.argv[1] == "quiet":
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("rlobs").setLevel(logging.ERROR)
with rlobs.Hub(["jsonl"], heartbeat_s=0, handle_signals=False) as hub:
    with hub.run("noisy") as run:
        for i in range(10):
            run.step(1.0, {"loss": "not a number"})
    for i in range(5):
        run.step(1.0)                               # after the end: ignored
print("loop output")
"""


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLOBS_")}
    env.update(PYTHONPATH=str(ROOT), RLOBS_JSONL_DIR=str(tmp_path))
    return subprocess.run([sys.executable, "-c", LOOP, mode], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=True)


def test_unconfigured_warnings_go_to_stderr_once_per_cause(tmp_path: Path) -> None:
    """No logging set up: stdout holds only the program's own output; stderr the
    rejected value on a doubling count (1st, 2nd, 4th, 8th) and the ignored hook once."""
    done = _run(tmp_path, "plain")
    assert done.stdout == "loop output\n"
    lines = done.stderr.splitlines()
    assert sum("value not recorded" in line for line in lines) == 4, done.stderr
    assert sum("run hook ignored" in line for line in lines) == 1, done.stderr


def test_an_application_filters_rlobs_by_name(tmp_path: Path) -> None:
    """`logging.getLogger("rlobs").setLevel(ERROR)` silences rlobs' warnings."""
    done = _run(tmp_path, "quiet")
    assert done.stdout == "loop output\n" and "rlobs" not in done.stderr


def test_the_cli_renders_rlobs_warnings_on_stderr(tmp_path: Path) -> None:
    """Under the CLI a warning is one `warning: ...` line on stderr, never on stdout."""
    code = ("from rlobs._cli import configure_logging\nfrom rlobs._log import logger\n"
            "configure_logging()  # what main() does first\n"
            "logger.warning('sink unavailable', sink='mlflow', reason='no server')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout == ""
    assert done.stderr.strip() == "warning: sink unavailable sink=mlflow reason='no server'"
