"""Params and tags: flattened, JSON-safe, secrets redacted before any sink sees them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

import rlobs
from rlobs import RunStart
from rlobs.testing import RecordingSink


def test_nested_params_flatten_to_dotted_keys() -> None:
    """Nested mappings become dotted keys; lists stay lists; objects become strings."""
    flat = rlobs.flatten_params({"net": {"hidden": [256, 256], "act": "relu"},
                                 "gamma": 0.99, "obj": object})
    assert flat["net.hidden"] == [256, 256]
    assert flat["net.act"] == "relu" and flat["gamma"] == 0.99
    assert flat["obj"] == str(object)


@pytest.mark.parametrize("key", ["password", "db_password", "api_key", "OPENAI_API_KEY",
                                 "hf_token", "accessToken", "secret", "aws.secret_access_key",
                                 "Authorization", "private-key"])
def test_credential_like_keys_are_secret(key: str) -> None:
    """Keys that name credentials are recognised."""
    assert rlobs.is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "tokenizer", "author", "num_tokens", "lr",
                                 "secretary_count"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    """Ordinary hyper-parameter names are left alone."""
    assert not rlobs.is_secret_key(key)


def test_uri_passwords_are_redacted() -> None:
    """The password part of a URI is replaced; the user and host stay."""
    assert (rlobs.redact_uri("postgresql://mlflow:hunter2@db:5432/mlflow")
            == "postgresql://mlflow:***@db:5432/mlflow")
    assert rlobs.redact_uri("http://host:5000") == "http://host:5000"


def test_secrets_never_reach_a_sink() -> None:
    """Params and tags are redacted by the hub before any sink receives them."""
    sink = RecordingSink()
    params = {"db": {"uri": "postgresql://u:pw@h/db", "password": "pw"}, "lr": 0.1}
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        with hub.run("secret", params=params, tags={"api_key": "sk-123"}) as run:
            run.set_tags({"hf_token": "hf_abc", "note": "https://a:b@c"})
    start = sink.of_type(RunStart)[0]
    assert start.params == {"db.uri": "postgresql://u:***@h/db", "db.password": "***",
                            "lr": 0.1}
    assert start.tags["api_key"] == "***"
    assert "pw" not in repr(sink.events) and "sk-123" not in repr(sink.events)
    assert sink.of_type(rlobs.RunUpdate)[0].tags == {"hf_token": "***", "note": "https://a:***@c"}


def test_provenance_tags_are_added_without_importing_anything() -> None:
    """Each run carries versions, host and command line."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("prov"):
        pass
    tags = sink.of_type(RunStart)[0].tags
    assert tags["rlobs.version"] == "0.1.0"
    assert {"rlobs.python", "rlobs.host", "rlobs.cmd"} <= set(tags)


def test_bad_metric_values_are_rejected_and_counted() -> None:
    """Values that are not numbers (strings, None) are left out and counted; bools and
    non-string keys coerce."""
    sink = RecordingSink()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("coerce") as run:
        run.step("1.5", {"ok": True, "text": "high", 3: 2.0, "none": None})  # type: ignore[arg-type,dict-item]
    (step,) = sink.of_type(rlobs.Step)
    assert math.isnan(step.reward)
    assert step.metrics == {"ok": 1.0, "3": 2.0}
    assert sink.of_type(rlobs.RunEnd)[0].rejected == 3


@pytest.mark.parametrize("key", ["PGPASSWORD", "passphrase", "pass", "db_pass", "bearer",
                                 "jwt", "sessionid", "session_id", "github_pat", "auth.key"])
def test_the_wider_list_of_secret_keys(key: str) -> None:
    """Every credential name the docs list is recognised, nested dotted keys included."""
    assert rlobs.is_secret_key(key)


@pytest.mark.parametrize("key", ["pass@1", "pass_rate", "path", "patience"])
def test_short_secret_words_only_as_a_keys_last_part(key: str) -> None:
    """``pass`` and ``pat`` mark a secret only at a key's end: eval metrics stay readable."""
    assert not rlobs.is_secret_key(key)


def test_nested_secret_keys_and_command_line_flags_are_redacted(
        monkeypatch: pytest.MonkeyPatch, runs_dir: Path) -> None:
    """A nested ``auth.key`` param and ``--api-key X`` / ``--token=X`` on the command line
    reach neither a sink nor the run log."""
    from rlobs._provenance import provenance_tags

    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", "sk-live-1", "--token=tk-2",
                                      "--lr", "0.1"])
    provenance_tags.cache_clear()
    sink = RecordingSink()
    try:
        with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub, \
                hub.run("nested", params={"auth": {"key": "k-3"}, "lr": 0.1}) as run:
            run.step(1.0)
    finally:
        provenance_tags.cache_clear()
    start = sink.of_type(RunStart)[0]
    assert start.params == {"auth": "***", "lr": 0.1}  # the whole secret-named branch
    assert start.tags["rlobs.cmd"] == "train.py --api-key *** --token=*** --lr 0.1"
    text = (runs_dir / f"{run.run_id}.jsonl").read_text()
    assert not any(secret in text for secret in ("sk-live-1", "tk-2", "k-3"))


def test_errors_span_attributes_and_status_are_redacted(runs_dir: Path) -> None:
    """A URI password in an exception, a secret-named span attribute and a password in a
    sink's status never show."""
    class Leaky(RecordingSink):
        def detail(self) -> str:
            return "connected to postgresql://u:hunter2@db/x"

    sink = Leaky()
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0) as hub:
        with pytest.raises(ConnectionError), hub.run("leaky") as run:
            with run.span("call", api_key="sk-9", url="https://u:pw9@h/x"):
                pass
            run.step(1.0)
            raise ConnectionError("cannot reach http://admin:pw7@mlflow:5000")
        details = [s.detail for s in hub.status()]
    assert run.result is not None and "pw7" not in (run.result.error or "")
    assert "http://admin:***@mlflow:5000" in (run.result.error or "")
    (span,) = sink.of_type(rlobs.Span)
    assert span.attributes == {"api_key": "***", "url": "https://u:***@h/x"}
    assert not any("hunter2" in (d or "") for d in details)
    text = (runs_dir / f"{run.run_id}.jsonl").read_text()
    assert not any(secret in text for secret in ("sk-9", "pw9", "pw7"))


def test_run_logs_are_private_to_their_owner(runs_dir: Path) -> None:
    """A run log is created mode 0600."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0) as hub, hub.run("private") as run:
        run.step(1.0)
    assert (runs_dir / f"{run.run_id}.jsonl").stat().st_mode & 0o777 == 0o600
