"""``rlobs.torch.log_model``: the policy as a real MLflow model, registered with an alias
and loaded back by it (pyfunc and pytorch flavours) from a real ``mlflow server``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow_support import client, experiment_name, find_run
from servers import MlflowServer

import rlobs
from rlobs.testing import RecordingSink
from rlobs.torch import SACActor, instrument, log_model
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink


def _actor() -> SACActor:
    torch.manual_seed(0)
    return SACActor(state_dim=6, action_dim=2, hidden=16).eval()


@pytest.mark.slow
# mlflow.pyfunc's import warns about its own type hints (mlflow/types/responses.py).
@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")
def test_registered_model_loads_by_alias_with_same_actions(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The logged model has a signature and input example, records the backend, is
    registered with an alias, and both flavours loaded by alias act as the actor does."""
    actor = _actor()
    obs = torch.randn(4, 6)
    compiled = instrument(actor, backend="eager", method="deterministic",
                          example_inputs=[obs])
    registered = f"sac-{secrets.token_hex(4)}"
    runs = mlflow_server.workdir / "runs"
    sink = MlflowSink(mlflow_server.url, experiment_name(), jsonl_dir=runs)
    with rlobs.Hub([JsonlSink(runs), sink], heartbeat_s=0) as hub, hub.run("sac") as run:
        run.step(1.0)
        log_model(compiled, name="policy", register_as=registered, alias="champion")
    assert hub.flush(180)
    c = client(mlflow_server.url)
    found = c.get_run(find_run(c, run.run_id).info.run_id)
    (output,) = found.outputs.model_outputs
    logged = c.get_logged_model(output.model_id)
    assert logged.name == "policy" and logged.tags["rlobs.backend"] == compiled.backend
    version = c.get_model_version_by_alias(registered, "champion")
    assert version.run_id == found.info.run_id

    import mlflow.pyfunc
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    uri = f"models:/{registered}@champion"
    served = mlflow.pyfunc.load_model(uri)
    assert served.metadata.signature is not None
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 6)
    probe = torch.randn(3, 6)  # another batch size than the example's
    with torch.inference_mode():
        expected = actor.deterministic(probe).numpy()
    np.testing.assert_allclose(served.predict(probe.numpy()), expected, atol=1e-6)
    module = mlflow.pytorch.load_model(uri)
    with torch.inference_mode():
        np.testing.assert_allclose(module(probe).numpy(), expected, atol=1e-6)


def test_model_is_exported_into_the_runs_files_and_recorded(tmp_path: Path) -> None:
    """In the training process: a ``model.pt2`` export and the examples in the run's
    files, and a ``rlobs.model.<name>`` tag saying where and how (no MLflow needed)."""
    sink = RecordingSink()
    actor = _actor()
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("sac") as run:
        directory = log_model(actor, torch.randn(1, 6), method="deterministic",
                              register_as="sac", alias="champion")
    assert hub.flush(60)
    assert {p.name for p in directory.iterdir()} == {
        "model.pt2", "input_example.pt", "output_example.pt"}
    program = torch.export.load(str(directory / "model.pt2")).module()
    probe = torch.randn(5, 6)  # a batch of one exported with a dynamic batch dimension
    with torch.inference_mode():
        torch.testing.assert_close(program(probe), actor.deterministic(probe))
    tags = [u.tags for u in sink.of_type(rlobs.RunUpdate) if "rlobs.model.policy" in u.tags]
    record = json.loads(tags[0]["rlobs.model.policy"])
    assert record == {"path": str(directory), "format": "pt2", "method": "deterministic",
                      "backend": "eager", "register_as": "sac", "alias": "champion"}
    assert run.result is not None


def test_bad_calls_are_clear_errors() -> None:
    """No open run, an alias without a registered model, a tuple output: ValueError."""
    actor = _actor()
    with pytest.raises(ValueError, match="open run"):
        log_model(actor, torch.randn(2, 6))
    with rlobs.Hub([RecordingSink()], heartbeat_s=0) as hub, hub.run("sac"):
        with pytest.raises(ValueError, match="register_as"):
            log_model(actor, torch.randn(2, 6), alias="champion")
        with pytest.raises(ValueError, match="one tensor"):
            log_model(actor, torch.randn(2, 6))  # forward returns (mean, log_std)
        with pytest.raises(ValueError, match="example_input"):
            log_model(actor, method="deterministic")
