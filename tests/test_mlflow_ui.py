"""What a person sees in MLflow's web UI for an rlobs run, in headless Chromium (Debian's
``chromium``): the runs table, the metric charts, the system metrics, the artifacts.

Each page is rendered by the real browser against a real ``mlflow server`` (``--dump-dom``
after the page's scripts ran) and screenshotted; with ``RLOBS_DOCS_IMG=docs/img`` the
screenshots are also copied there (they illustrate docs/mlflow.md).
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
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


def _browse(url: str, out: Path) -> subprocess.Popen[bytes]:
    """Start Chromium rendering ``url``: its DOM to ``out``.html, a picture to ``out``.png
    (two processes: Chromium cuts the page short when asked for both at once)."""
    assert CHROMIUM is not None
    common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1400,900", "--virtual-time-budget=30000",
              f"--user-data-dir={out}.profile"]
    with out.with_suffix(".html").open("wb") as dom:
        return subprocess.Popen([*common, "--dump-dom", url], stdout=dom,
                                stderr=subprocess.DEVNULL)


def _shoot(url: str, out: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM is not None
    return subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--hide-scrollbars", "--window-size=1400,900",
                             "--virtual-time-budget=30000",
                             f"--user-data-dir={out}.shot-profile",
                             f"--screenshot={out.with_suffix('.png')}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    with rlobs.Hub([JsonlSink(runs), sink], heartbeat_s=0, system_metrics_s=0.3) as hub, \
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
    views = {"runs": base, "metrics": f"{base}/runs/{found.info.run_id}/model-metrics",
             "system": f"{base}/runs/{found.info.run_id}/system-metrics",
             "artifacts": f"{base}/runs/{found.info.run_id}/artifacts"}
    browsers = [_browse(url, work / name) for name, url in views.items()]
    browsers += [_shoot(url, work / name) for name, url in views.items()]
    for browser in browsers:
        browser.wait(timeout=150)
    docs = os.environ.get("RLOBS_DOCS_IMG")
    for name in views:
        picture = work / f"{name}.png"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if docs:
            shutil.copy(picture, Path(docs) / f"mlflow-ui-{name}.png")
    return {name: _text((work / f"{name}.html").read_text()) for name in views}


def test_experiment_opens_on_the_runs_table(pages: dict[str, str]) -> None:
    """The experiment page is the training runs table, with the seeded run name and the
    script as its source."""
    text = pages["runs"]
    assert "Training runs" in text and "ppo-cartpole-seed1" in text
    assert "test_mlflow_ui" in text or "pytest" in text  # the Source column


def test_metric_charts_are_curves_not_bookkeeping(pages: dict[str, str]) -> None:
    """The run's metric charts include the loss curve and the score, and none of the
    bookkeeping counters; about ten charts, not forty."""
    text = pages["metrics"]
    count = int(re.search(r"Model metrics \((\d+)\)", text).group(1))  # type: ignore[union-attr]
    assert 6 <= count <= 12, text[:2000]
    assert "(loss)" in text and "(score)" in text and "(episode_return)" in text
    assert not re.search(r"\((completed|dropped|rejected|rlobs\.nonfinite_values)\)", text)


def test_system_metrics_tab_shows_the_samples(pages: dict[str, str]) -> None:
    """MLflow's System metrics tab has charts: CPU utilisation among them."""
    text = pages["system"]
    assert int(re.search(r"System metrics \((\d+)\)", text).group(1)) > 0  # type: ignore[union-attr]
    assert "cpu_utilization_percentage" in text


def test_artifacts_hold_the_users_files_and_the_run_log(pages: dict[str, str]) -> None:
    """The Artifacts tab lists the user's ``reports`` folder and the ``rlobs`` run log."""
    text = pages["artifacts"]
    assert " reports " in f" {text} " and " rlobs " in f" {text} "
