"""Typed reading of the environment: bad values warn and fall back (fail soft)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import environment_variables as ev
from ._exceptions import ConfigWarning


def env_float(
    name: str, default: float, *, minimum: float = 0.0, env: Mapping[str, str] | None = None
) -> float:
    """Read a float variable; a missing, unparsable or too small value gives ``default``."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        _bad(name, raw, f"not a number; using {default}")
        return default
    if not value >= minimum:  # also rejects NaN
        _bad(name, raw, f"must be >= {minimum}; using {default}")
        return default
    return value


def env_int(
    name: str, default: int, *, minimum: int = 0, env: Mapping[str, str] | None = None
) -> int:
    """Read an integer variable; a missing, unparsable or too small value gives ``default``."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        _bad(name, raw, f"not an integer; using {default}")
        return default
    if value < minimum:
        _bad(name, raw, f"must be >= {minimum}; using {default}")
        return default
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """Read a boolean variable (1/0, true/false, yes/no, on/off)."""
    raw = (os.environ if env is None else env).get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    _bad(name, raw, f"not a boolean; using {default}")
    return default


def _bad(name: str, raw: str, why: str) -> None:
    warnings.warn(f"{name}={raw!r} is {why}", ConfigWarning, stacklevel=3)


@dataclass(frozen=True)
class Settings:
    """The hub's settings; :meth:`from_env` reads them, keyword overrides win."""

    end_timeout_s: float = 5.0
    open_timeout_s: float = 60.0
    heartbeat_s: float = 10.0
    system_metrics_s: float = 10.0
    queue_size: int = 65536
    handle_signals: bool = True
    shipper: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, then ``overrides`` that are not ``None``."""
        base = cls(
            end_timeout_s=env_float(ev.RLOBS_END_TIMEOUT_S, 5.0, env=env),
            open_timeout_s=env_float(ev.RLOBS_OPEN_TIMEOUT_S, 60.0, env=env),
            heartbeat_s=env_float(ev.RLOBS_HEARTBEAT_S, 10.0, env=env),
            system_metrics_s=env_float(ev.RLOBS_SYSTEM_METRICS_S, 10.0, env=env),
            queue_size=env_int(ev.RLOBS_QUEUE_SIZE, 65536, minimum=16, env=env),
            handle_signals=env_bool(ev.RLOBS_HANDLE_SIGNALS, True, env=env),
            shipper=env_bool(ev.RLOBS_SHIPPER, True, env=env),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
