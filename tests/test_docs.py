"""Every ```python block of README.md and docs/*.md runs as pasted.

Each block runs in a fresh interpreter in a temporary directory (``RLOBS_JSONL_DIR``
there too), with no sinks but the run log unless the block sets its own. A comment line
just before a block changes how it is taken:

- ``<!-- partial -->``: deliberately incomplete (a fragment of a larger program); skipped.
- ``<!-- continues -->``: runs after the block before it, as one program.
- ``<!-- needs: mlflow-server -->`` / ``<!-- needs: cuda -->``: runs only where that is
  available (an MLflow server at ``MLFLOW_TRACKING_URI``; a CUDA device), else skipped.
- ``<!-- needs: ray -->``: skipped here; ``tests/test_integrations_ray.py`` runs these
  blocks on its one local Ray cluster and checks what they logged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/integrations.md is run by tests/test_docs_integrations.py, every block in order in
# one interpreter, with checks of the runs they record; running its SB3 blocks twice
# would double the suite's longest tests for nothing.
DOCS = [ROOT / "README.md",
        *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "integrations.md")]

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*(partial|continues|needs:\s*[\w\-, |]+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """A runnable program of a document: one block, or blocks that continue it."""

    doc: str
    line: int
    code: str
    partial: bool
    needs: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _marker(text: str, at: int) -> str | None:
    before = text[:at].rstrip("\n").rsplit("\n", 1)[-1]
    match = _MARK.search(before)
    return match.group(1) if match else None


def blocks(path: Path) -> list[Block]:
    """The programs of one markdown file."""
    text = path.read_text(encoding="utf-8")
    out: list[Block] = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        mark = _marker(text, match.start()) or ""
        code = match.group(1)
        if mark == "continues" and out:
            prev = out.pop()
            out.append(Block(prev.doc, prev.line, prev.code + "\n" + code, prev.partial,
                             prev.needs))
            continue
        needs = tuple(n.strip() for n in re.split(r"[,|]", mark.split(":", 1)[1])
                      if n.strip()) if mark.startswith("needs") else ()
        out.append(Block(str(path.relative_to(ROOT)), line, code, mark == "partial", needs))
    return out


ALL = [b for path in DOCS for b in blocks(path)]


def _missing(need: str) -> str | None:
    if need == "mlflow-server":
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        return None if uri.startswith("http") else "needs an MLflow server " \
            "(MLFLOW_TRACKING_URI=http://...)"
    if need == "cuda":
        probe = subprocess.run([sys.executable, "-c", "import torch, sys; "
                                "sys.exit(0 if torch.cuda.is_available() else 1)"],
                               capture_output=True, timeout=120, check=False)
        return None if probe.returncode == 0 else "needs a CUDA device"
    if need == "ray":  # run on one shared local cluster there, with checks of their logs
        return "run by tests/test_integrations_ray.py"
    return f"unknown need {need!r}"


def test_every_doc_has_its_blocks_found() -> None:
    """The extractor sees the README's blocks (a broken fence would hide them all)."""
    readme = [b for b in ALL if b.doc == "README.md"]
    assert readme and "import rlobs" in readme[0].code


@pytest.mark.slow
@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_block_runs_as_pasted(block: Block, tmp_path: Path) -> None:
    """The block runs to the end in a fresh interpreter: exit status 0, no traceback."""
    if block.partial:
        pytest.skip("marked <!-- partial -->")
    for need in block.needs:
        why = _missing(need)
        if why:
            pytest.skip(why)
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith(("RLOBS_", "OTEL_")) and k != "MLFLOW_TRACKING_URI")
           or (k == "MLFLOW_TRACKING_URI" and "mlflow-server" in block.needs)}
    env.update({"PYTHONPATH": str(ROOT), "RLOBS_JSONL_DIR": str(tmp_path / "rlobs-runs"),
                "RLOBS_SINKS": "jsonl", "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    report = (f"{block.id} failed:\n{block.code}\n--- stdout\n{done.stdout[-3000:]}\n"
              f"--- stderr\n{done.stderr[-3000:]}")
    assert done.returncode == 0, report
    assert "Traceback" not in done.stderr, report  # e.g. a child process that failed
