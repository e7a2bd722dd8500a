"""Sinks discovered by entry point (group ``rlobs.sinks``) and selected by name."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points

from . import environment_variables as ev
from ._exceptions import ConfigError, SinkUnavailable, UnknownSinkError
from ._sink import Sink

GROUP = "rlobs.sinks"
"""Entry-point group a package registers its sinks under: ``name = "module:Class"``."""


def registered_sinks() -> dict[str, EntryPoint]:
    """Every sink name installed packages register, with its entry point."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


class BrokenSink(Sink):
    """Stands in for a registered sink that cannot be built: always unavailable."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @classmethod
    def named(cls, name: str, reason: str) -> BrokenSink:
        """A broken sink reported under ``name``."""
        subclass: type[BrokenSink] = type(f"Broken_{name}", (cls,), {"name": name})
        return subclass(reason)

    def open(self) -> None:
        raise SinkUnavailable(self.reason)


def load_sink_class(name: str) -> type[Sink] | BrokenSink:
    """The sink class registered as ``name``, or a :class:`BrokenSink` saying why not.

    Raises:
        UnknownSinkError: no installed package registers ``name``.
    """
    known = registered_sinks()
    if name not in known:
        raise UnknownSinkError(name, known)
    try:
        cls = known[name].load()
    except Exception as exc:  # a broken plug-in must not take the agent down
        reason = f"cannot load {known[name].value}: {type(exc).__name__}: {exc}"
        return BrokenSink.named(name, reason)
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        return BrokenSink.named(name, f"{known[name].value} is not an rlobs.Sink subclass")
    return cls


def parse_sink_names(raw: str) -> list[str]:
    """``"jsonl, mlflow"`` → ``["jsonl", "mlflow"]``; ``"none"`` → ``[]``."""
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    if names == ["none"]:
        return []
    return list(dict.fromkeys(names))


def selected_names(env: Mapping[str, str] | None = None) -> list[str]:
    """Sink names the environment selects (see ``RLOBS_SINKS``).

    Raises:
        UnknownSinkError: a name in ``RLOBS_SINKS`` is not registered.
    """
    env = os.environ if env is None else env
    raw = env.get(ev.RLOBS_SINKS)
    known = registered_sinks()
    if raw is not None and raw.strip():
        names = parse_sink_names(raw)
        for name in names:
            if name not in known:
                raise UnknownSinkError(name, known)
        return names
    names = ["jsonl"] if "jsonl" in known else []
    for name in sorted(known):
        if name in names:
            continue
        cls = load_sink_class(name)
        if isinstance(cls, type) and cls.selected_by_default(env):
            names.append(name)
    return names


def build_sinks(spec: Iterable[str | Sink], env: Mapping[str, str] | None = None) -> list[Sink]:
    """Sink instances from names and/or instances (names are built with ``from_env``).

    Raises:
        UnknownSinkError: a name is not registered.
        ConfigError: a sink's own configuration is invalid.
    """
    env = os.environ if env is None else env
    sinks: list[Sink] = []
    for item in spec:
        if isinstance(item, Sink):
            sinks.append(item)
            continue
        for name in parse_sink_names(str(item)):
            cls = load_sink_class(name)
            sinks.append(cls if isinstance(cls, BrokenSink) else _construct(cls, name, env))
    return sinks


def build_sinks_from_spec(spec: Iterable[Mapping[str, object]]) -> list[Sink]:
    """The shipper's sinks: each ``{"name": ..., "env": {...}}`` built with ``from_env``
    on this process's environment plus the entry's variables (which win)."""
    sinks: list[Sink] = []
    for entry in spec:
        name = str(entry.get("name"))
        extra = entry.get("env") or {}
        env = {**os.environ, **(extra if isinstance(extra, Mapping) else {})}
        try:
            cls = load_sink_class(name)
        except UnknownSinkError as exc:
            sinks.append(BrokenSink.named(name, str(exc)))
            continue
        try:
            sinks.append(cls if isinstance(cls, BrokenSink) else _construct(cls, name, env))
        except ConfigError as exc:
            sinks.append(BrokenSink.named(name, f"cannot configure: {exc}"))
    return sinks


def _construct(cls: type[Sink], name: str, env: Mapping[str, str]) -> Sink:
    try:
        return cls.from_env(env)
    except ConfigError:
        raise
    except Exception as exc:
        return BrokenSink.named(name, f"cannot configure: {type(exc).__name__}: {exc}")
