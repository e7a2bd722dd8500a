"""OTel sink configuration and health: resource attributes from a given environment, the
endpoint probe, and losses still shown once the hub closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver
from servers import free_port

import rlobs
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow

_ENV = {"OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=rl-agents,"
                                    "deployment.environment=ci%2Fnightly",
        "OTEL_SERVICE_NAME": "trainer"}


def _resource(receiver: OtlpReceiver, hub: rlobs.Hub) -> dict[str, object]:
    with hub, hub.run("configured") as run:
        run.step(1.0)
    return receiver.wait_for(2)[0].resource


def test_resource_attributes_from_the_sinks_env(receiver: OtlpReceiver) -> None:
    """OtelSink(env=...) honours OTEL_RESOURCE_ATTRIBUTES as it does OTEL_SERVICE_NAME."""
    hub = rlobs.Hub(["jsonl", OtelSink(receiver.url, env=_ENV)], heartbeat_s=0,
                    provenance=False)
    resource = _resource(receiver, hub)
    assert resource["openinference.project.name"] == "rl-agents"
    assert resource["deployment.environment"] == "ci/nightly"
    assert resource["service.name"] == "trainer"


def test_resource_attributes_from_the_hubs_env(receiver: OtlpReceiver,
                                               runs_dir: Path) -> None:
    """Hub(env=...) with the otel sink selected by its endpoint variable does the same."""
    env = {**_ENV, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
           "RLOBS_JSONL_DIR": str(runs_dir)}
    resource = _resource(receiver, rlobs.Hub(env=env, heartbeat_s=0, provenance=False))
    assert resource["openinference.project.name"] == "rl-agents"
    assert resource["service.name"] == "trainer"


def test_probe_says_whether_the_endpoint_answers(receiver: OtlpReceiver) -> None:
    """probe() is None for a listening endpoint and says why for a dead port."""
    assert OtelSink(receiver.url).probe() is None
    why = OtelSink(f"http://127.0.0.1:{free_port()}/v1/traces").probe()
    assert why is not None and "cannot connect to 127.0.0.1" in why
    assert OtelSink(env={"OTEL_SDK_DISABLED": "true"}).probe() is not None
    assert OtelSink("http://[::1/v1/traces").probe() == (  # said, not raised
        "bad endpoint http://[::1/v1/traces: Invalid IPv6 URL")


def test_losses_stay_visible_after_close() -> None:
    """A sink whose exports failed still says how many spans it lost once closed."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(f"http://127.0.0.1:{free_port()}/v1/traces", timeout=0.3)
    hub = rlobs.Hub([OtelSink(exporter=exporter, flush_timeout_s=1.0, close_timeout_s=2.0)],
                    heartbeat_s=0, provenance=False)
    with hub, hub.run("offline") as run:
        for _ in range(20):
            with run.span("actor.forward"):
                pass
            run.step(1.0)
    (status,) = hub.status()
    assert status.detail is not None and status.detail.startswith("closed; "), status
    assert "spans lost" in status.detail or "not exported" in status.detail, status.detail
