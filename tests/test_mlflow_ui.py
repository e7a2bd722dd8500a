"""What a person sees in MLflow's web UI for an rlobs run, in headless Chromium (Debian's
``chromium``): the runs table, the metric charts, the system metrics, the artifacts, the
run's linked trace.

Each page is rendered by the real browser against a real ``mlflow server`` (``--dump-dom``
after the page's scripts ran). With ``RLOBS_DOCS_IMG=docs/img`` each page is also
screenshotted there (the pictures in docs/mlflow.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, find_run
from servers import MlflowServer

import rlobs
from rlobs import TraceIds
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink
from sinks.otel import OtelSink

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


def _browse(url: str, out: Path) -> subprocess.Popen[bytes]:
    """Start Chromium rendering ``url``, its DOM to ``out``.html (a picture is another
    process, :func:`_shoot`: asked for both at once, Chromium cuts the page short)."""
    assert CHROMIUM is not None
    common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1400,900", "--virtual-time-budget=90000", "--timeout=150000",
              f"--user-data-dir={out}.profile"]
    with out.with_suffix(".html").open("wb") as dom:
        return subprocess.Popen([*common, "--dump-dom", url], stdout=dom,
                                stderr=subprocess.DEVNULL)


def _shoot(url: str, out: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM is not None
    profile = Path(f"/tmp/rlobs-ui-{out.name}-{os.getpid()}")
    return subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--hide-scrollbars", "--window-size=1400,900",
                             "--virtual-time-budget=90000", "--timeout=150000",
                             f"--user-data-dir={profile}",
                             f"--screenshot={out.with_suffix('.png')}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _all(browsers: list[subprocess.Popen[bytes]]) -> None:
    """Wait for every browser (each stops itself after 150 s: ``--timeout``)."""
    try:
        for browser in browsers:
            browser.wait(timeout=240)
    finally:
        for browser in browsers:
            if browser.poll() is None:
                browser.kill()
                browser.wait()


def _text(html: str) -> str:
    html = re.sub(r"<script.*?</script>|<style.*?</style>", "", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def pages(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory,
          ) -> dict[str, str]:
    """One run logged through rlobs, its pages rendered: name → visible text."""
    work = tmp_path_factory.mktemp("ui")
    report = work / "report.txt"
    report.write_text("ok")
    runs = mlflow_server.workdir / "runs"
    experiment = experiment_name()
    sink = MlflowSink(mlflow_server.url, experiment, jsonl_dir=runs)
    experiment_id = client(mlflow_server.url).create_experiment(experiment)
    otel = OtelSink(f"{mlflow_server.url}/v1/traces",
                    headers={"x-mlflow-experiment-id": str(experiment_id)})
    with rlobs.Hub([JsonlSink(runs), sink, otel], heartbeat_s=0,
                   system_metrics_s=0.3) as hub, \
            hub.run("ppo-cartpole", params={"seed": 1, "lr": 3e-4},
                    description="PPO on CartPole, seed 1") as run:
        for i in range(200):
            run.step(1.0, {"loss": 1.0 / (i + 1)}, done=i % 20 == 19)
            if i % 50 == 0:
                time.sleep(0.3)
        run.log_artifact(report, "reports")
    assert hub.flush(120)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    base = f"{mlflow_server.url}/#/experiments/{found.info.experiment_id}"
    # MLflow 3.17 opens an experiment on the view its GenAI / Model training switch
    # holds (GenAI for a new browser); the link says which.
    page = f"{base}/runs/{found.info.run_id}"
    views = {"runs": f"{base}?workflowType=machine_learning",
             "metrics": f"{page}/model-metrics", "system": f"{page}/system-metrics",
             "artifacts": f"{page}/artifacts", "traces": f"{page}/traces"}
    docs = os.environ.get("RLOBS_DOCS_IMG")
    for name, url in views.items():  # one browser at a time: charts draw late on 2 cores
        _all([_browse(url, work / name)])
        if docs:
            _all([_shoot(url, Path(docs) / f"mlflow-ui-{name}")])
    return {"run_id": run.run_id,
            **{name: _text((work / f"{name}.html").read_text()) for name in views}}


def test_experiment_opens_on_the_runs_table(pages: dict[str, str]) -> None:
    """The experiment's Model training link opens on its runs table (not the GenAI
    overview), listing the run under its seeded name."""
    text = pages["runs"]
    assert text.lstrip().startswith("Runs - Experiment"), text[:300]
    assert "ppo-cartpole-seed1" in text and "1 matching run" in text


def test_metric_charts_are_curves_not_bookkeeping(pages: dict[str, str]) -> None:
    """The run's Model metrics section holds about ten charts, not forty, and none of
    them is bookkeeping. (The charts' plots draw late on a loaded machine: the section's
    count is what the test reads; docs/img/mlflow-ui-metrics.png shows them drawn.)"""
    text = pages["metrics"]
    count = int(re.search(r"Model metrics \((\d+)\)", text).group(1))  # type: ignore[union-attr]
    assert 6 <= count <= 12, text[:2000]
    assert not re.search(r"\b(completed|dropped|rejected|rlobs\.nonfinite_values)\b", text)


def test_system_metrics_tab_shows_the_samples(pages: dict[str, str]) -> None:
    """MLflow's System metrics tab counts the sampler's ``system/…`` metrics as its own:
    eight host figures at least."""
    text = pages["system"]
    assert int(re.search(r"System metrics \((\d+)\)", text).group(1)) >= 8  # type: ignore[union-attr]


def test_artifacts_hold_the_users_files_and_the_run_log(pages: dict[str, str]) -> None:
    """The Artifacts tab lists the user's ``reports`` folder and the ``rlobs`` run log."""
    text = pages["artifacts"]
    assert " reports " in f" {text} " and " rlobs " in f" {text} "


def test_the_runs_traces_tab_lists_its_trace(pages: dict[str, str]) -> None:
    """The run's Traces tab lists the trace the OTel sink exported for it (linked by the
    MLflow sink): its id, the run's params as the request, its end as the response."""
    trace = f"tr-{TraceIds.of(pages['run_id']).trace_id:032x}"
    text = pages["traces"]
    assert trace in text, text[:2000]
    assert '"seed": 1' in text and '"steps": 200' in text
