"""Configuration from the environment: selection, fail-fast names, soft bad values."""

from __future__ import annotations

import pytest

import rlobs
from rlobs import ConfigWarning, UnknownSinkError
from rlobs._settings import Settings


def _names(hub: rlobs.Hub) -> list[str]:
    return [s.name for s in hub.sinks]


def test_default_selection_is_jsonl_plus_configured_sinks() -> None:
    """With RLOBS_SINKS unset only jsonl is on (no other sink's variable is set)."""
    assert rlobs.selected_names({}) == ["jsonl"]


def test_rlobs_sinks_none_disables_all() -> None:
    """`RLOBS_SINKS=none` selects no sink, and runs still work."""
    hub = rlobs.Hub(env={"RLOBS_SINKS": "none"}, heartbeat_s=0)
    assert hub.sinks == []
    with hub, hub.run("quiet") as run:
        run.step(1.0)
    assert run.result is not None and run.result.steps == 1


def test_unknown_sink_name_fails_fast_listing_known_names() -> None:
    """An unknown name in RLOBS_SINKS raises at hub construction, naming the known ones."""
    with pytest.raises(UnknownSinkError) as info:
        rlobs.Hub(env={"RLOBS_SINKS": "jsonl,mlfow"})
    assert "'mlfow'" in str(info.value) and "jsonl" in str(info.value)


def test_unknown_sink_name_as_argument_fails_fast() -> None:
    """Explicit names are checked the same way."""
    with pytest.raises(UnknownSinkError):
        rlobs.Hub(["nope"])


def test_explicit_sinks_beat_the_environment() -> None:
    """`Hub(sinks=...)` ignores RLOBS_SINKS."""
    hub = rlobs.Hub(["jsonl"], env={"RLOBS_SINKS": "none"})
    assert _names(hub) == ["jsonl"]


def test_names_are_trimmed_lowercased_and_deduplicated() -> None:
    """` JSONL , jsonl ` selects jsonl once."""
    assert rlobs.selected_names({"RLOBS_SINKS": " JSONL , jsonl "}) == ["jsonl"]


@pytest.mark.parametrize(("var", "raw"), [("RLOBS_END_TIMEOUT_S", "soon"),
                                           ("RLOBS_HEARTBEAT_S", "-1"),
                                           ("RLOBS_QUEUE_SIZE", "3.5"),
                                           ("RLOBS_HANDLE_SIGNALS", "maybe"),
                                           ("RLOBS_END_TIMEOUT_S", "nan")])
def test_bad_numeric_values_warn_and_fall_back(var: str, raw: str) -> None:
    """A bad value is named in a ConfigWarning and the default is used."""
    with pytest.warns(ConfigWarning, match=var):
        settings = Settings.from_env({var: raw})
    assert settings == Settings()


def test_good_values_are_read_and_arguments_win() -> None:
    """Valid values are read; explicit keyword arguments override them."""
    env = {"RLOBS_END_TIMEOUT_S": "2.5", "RLOBS_HEARTBEAT_S": "0", "RLOBS_QUEUE_SIZE": "128"}
    settings = Settings.from_env(env, end_timeout_s=1.0)
    assert (settings.end_timeout_s, settings.heartbeat_s, settings.queue_size) == (1.0, 0.0, 128)


def test_jsonl_directory_comes_from_the_environment(tmp_path: pytest.TempPathFactory) -> None:
    """RLOBS_JSONL_DIR sets where the JSONL sink writes."""
    hub = rlobs.Hub(["jsonl"], env={"RLOBS_JSONL_DIR": str(tmp_path)})
    assert str(hub.sinks[0].directory) == str(tmp_path)  # type: ignore[attr-defined]


def test_registered_sink_that_cannot_load_is_unavailable_not_fatal() -> None:
    """A registered sink whose module fails to import is reported, not raised."""
    from rlobs._registry import BrokenSink

    broken = BrokenSink.named("ghost", "cannot load ghost:Sink: ImportError")
    with rlobs.Hub([broken, "jsonl"], heartbeat_s=0) as hub:
        with hub.run("ghost-run") as run:
            run.step(1.0)
        status = {s.name: s for s in hub.status()}
    assert not status["ghost"].available
    assert "ImportError" in (status["ghost"].detail or "")
    assert status["jsonl"].delivered >= 3
