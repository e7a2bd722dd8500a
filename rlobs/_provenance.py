"""Reproducibility tags added to every run: versions, host, git state, command line."""

from __future__ import annotations

import functools
import getpass
import hashlib
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ._params import redact_argv

_PACKAGES = ("torch", "mlflow", "opentelemetry-sdk", "numpy", "gymnasium", "stable-baselines3")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _source() -> str:
    """The program that runs: the main script's absolute path, ``-c``, or ``python``."""
    main = sys.argv[0] if sys.argv else ""
    if main and main != "-c" and Path(main).exists():
        return str(Path(main).resolve())
    return main or "python"


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no USER/LOGNAME: a container's bare uid
        return None


@functools.cache
def provenance_tags() -> dict[str, str]:
    """Tags that say where and with what a run ran (computed once per process).

    Package versions come from installed metadata: nothing is imported.
    """
    tags = {
        "rlobs.version": _version("rlobs") or "unknown",
        "rlobs.python": platform.python_version(),
        "rlobs.platform": platform.platform(terse=True),
        "rlobs.host": socket.gethostname(),
        "rlobs.pid": str(os.getpid()),
        "rlobs.cmd": redact_argv(sys.argv)[:500],
        "rlobs.source": _source(),
    }
    user = _user()
    if user:
        tags["rlobs.user"] = user
    for dist in _PACKAGES:
        version = _version(dist)
        if version:
            tags[f"rlobs.pkg.{dist}"] = version
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["rlobs.git.commit"] = commit
        tags["rlobs.git.dirty"] = str(bool(_git("status", "--porcelain", "-uno"))).lower()
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
        if branch:
            tags["rlobs.git.branch"] = branch
    return tags


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (streamed) or of a directory's files in sorted order."""
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        if root.is_dir():
            digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


os.register_at_fork(after_in_child=provenance_tags.cache_clear)
