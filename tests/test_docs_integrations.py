"""Every Python block of docs/integrations.md runs as written (each in a fresh namespace,
one interpreter, a temporary log directory), and the runs they record are in the logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "integrations.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

_RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"integrations.md block {i + 1}", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"BLOCK {i + 1} FAILED", flush=True)
        sys.exit(1)
"""


def blocks() -> list[str]:
    """The Python code blocks of docs/integrations.md, in order."""
    return _BLOCK.findall(DOC.read_text())


def test_the_doc_has_a_block_for_each_hook() -> None:
    """The Gymnasium, vector, SB3 (saving callbacks, VecNormalize, resume) blocks exist."""
    text = "\n".join(blocks())
    for needle in ("RecordEpisodes(", "NormalizeReward", "RecordVectorEpisodes(",
                   "RlobsCallback(verbose=1)", "CheckpointCallback", "EvalCallback",
                   "VecNormalize", "reset_num_timesteps=False"):
        assert needle in text, needle


@pytest.mark.slow
def test_every_python_block_runs(tmp_path: Path) -> None:
    """Each block runs without error; the runs the doc opens end finished in the log."""
    code = tmp_path / "blocks.json"
    code.write_text(json.dumps(blocks()))
    logs = tmp_path / "runs"
    env = {**os.environ, "RLOBS_JSONL_DIR": str(logs), "RLOBS_SINKS": "jsonl",
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(DOC.parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(code)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ends = {}
    for path in logs.glob("*.jsonl"):
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        name = next(x["name"] for x in lines if x["type"] == "run_start")
        ends.setdefault(name, []).append(lines[-1])
    assert {"cartpole", "cartpole-normalised", "cartpole-x8", "sb3-ppo", "sb3-dqn",
            "rollout"} <= set(ends)
    assert all(e["type"] == "run_end" and e["status"] == "finished"
               for group in ends.values() for e in group)
    assert "rlobs: recording run 'sb3-ppo'" in done.stdout  # verbose=1
