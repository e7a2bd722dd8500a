"""Ray on a real local cluster: a Tune sweep, rollout actors, tasks and RLlib, logged
through rlobs into MLflow on PostgreSQL and OTLP (MLflow's ``/v1/traces``).

One ``ray.init(num_cpus=2)`` cluster serves the whole module; each scenario runs once in
a module fixture and several tests read its results back.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow_support import client, experiment_name, find_run, poll
from otlp_receiver import OtlpReceiver, ReceivedSpan
from servers import MlflowServer

from rlobs import Hub, RunStatus, TraceIds, read_run, sync
from rlobs.integrations.ray import RlobsTuneCallback, worker_env, worker_run

# The first test that asks for the scenarios waits for them (and for the servers) too.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPORTS = 50
ACTORS = 4
ACTOR_STEPS = 5_000
VICTIM = 2  # the actor killed mid-run
KILL_AFTER = 2_000  # steps the victim logs before it waits to be killed


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray cluster for the module (starting one costs seconds). Workers get
    this module's functions by value: they cannot import a test module."""
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver: the spans as the shippers sent them, links included."""
    server = OtlpReceiver()
    yield server
    server.close()


def _backends(server: MlflowServer, runs: Path, receiver: OtlpReceiver) -> dict[str, str]:
    """The variables that point rlobs at MLflow-on-PostgreSQL and OTLP, in a fresh
    experiment (few step spans: the runs' nesting is what is checked)."""
    name = experiment_name()
    experiment_id = str(client(server.url).create_experiment(name))
    return {
        "RLOBS_SINKS": "jsonl,mlflow,otel", "RLOBS_JSONL_DIR": str(runs),
        "RLOBS_HANDLE_SIGNALS": "0", "RLOBS_HEARTBEAT_S": "0",
        "MLFLOW_TRACKING_URI": server.url, "RLOBS_MLFLOW_EXPERIMENT": name,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "RLOBS_OTEL_STEP_SPANS": "3", "RLOBS_OTEL_STEP_EVERY": "0",
        "RLOBS_OTEL_TRACE_STEPS": "0",
        # One single-worker server takes every run, metric and span on a shared 2-core
        # machine: allow slow requests.
        "RLOBS_MLFLOW_REQUEST_TIMEOUT_S": "60", "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "RLOBS_SHIPPER_IDLE_S": "2",
        "_EXPERIMENT_ID": experiment_id,
    }


def patch_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of :func:`_backends` that go into the environment."""
    return {k: v for k, v in env.items() if not k.startswith("_")}


def _mlflow_runs(url: str, experiment_id: str) -> dict[str, Any]:
    """The experiment's MLflow runs by rlobs run name."""
    return {r.data.tags["rlobs.name"]: r for r in client(url).search_runs([experiment_id])}


def _assert_linked(receiver: OtlpReceiver, parent_id: str, child_ids: list[str]) -> None:
    """Each child's run span is a child of the parent's run span, in the parent's trace."""
    def run_spans() -> dict[str, ReceivedSpan] | None:
        spans = {s.attributes.get("rlobs.run_id"): s for s in list(receiver.spans)
                 if s.name.startswith("invoke_agent")}
        return spans if {parent_id, *child_ids} <= set(spans) else None

    spans = poll(run_spans, timeout_s=60)
    assert spans, "run spans missing"
    parent = spans[parent_id]
    assert (parent.trace_id, parent.span_id) == (TraceIds.of(parent_id).trace_id,
                                                 TraceIds.of(parent_id).run_span)
    assert parent.parent_id is None
    for child_id in child_ids:
        child = spans[child_id]
        assert (child.trace_id, child.parent_id) == (parent.trace_id, parent.span_id), \
            child.name
        assert child.attributes["rlobs.parent_run_id"] == parent_id


# ---------------------------------------------------------------------- no cluster


def test_the_module_imports_neither_tune_nor_rllib_until_asked() -> None:
    """``rlobs.integrations.ray`` imports neither Tune nor RLlib; each callback imports its
    library when it is asked for (the tests below use both)."""
    import subprocess
    import sys

    code = ("import sys, rlobs.integrations.ray\n"
            "print('ray.tune' in sys.modules, 'ray.rllib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False False"


def test_worker_env_carries_the_sinks_and_the_parent(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Only rlobs/MLflow/OTel variables travel; a relative log directory becomes absolute."""
    monkeypatch.chdir(tmp_path)
    env = worker_env("parent-1", env={"RLOBS_JSONL_DIR": "runs", "MLFLOW_TRACKING_URI": "x",
                                      "OTEL_EXPORTER_OTLP_ENDPOINT": "y", "HOME": "/root"})
    assert env == {"RLOBS_JSONL_DIR": str(tmp_path / "runs"), "MLFLOW_TRACKING_URI": "x",
                   "OTEL_EXPORTER_OTLP_ENDPOINT": "y", "RLOBS_PARENT_ID": "parent-1"}


def test_bad_arguments_fail_clearly() -> None:
    """A parent id that is no run id, or half a best-trial rule, is refused at once."""
    from rlobs import InvalidRunId

    with pytest.raises(InvalidRunId):
        worker_env("../etc")
    with pytest.raises(ValueError, match="both metric and mode"):
        RlobsTuneCallback(metric="loss")
    with pytest.raises(ValueError, match="'min' or 'max'"):
        RlobsTuneCallback(metric="loss", mode="best")


# ---------------------------------------------------------------------- Ray Tune


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for i in range(REPORTS):
        if config["fail"] and i == 3:
            raise ValueError("diverged")
        tune.report({"score": config["x"] * (i + 1), "nested": {"x": config["x"]}})


def _tuner(base: Path, callback: RlobsTuneCallback) -> Any:
    """4 trials × up to 50 reports under ASHA; the trial with x=3 fails at its 4th."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    return tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search([4, 3, 2, 1]),
                     "fail": tune.sample_from(lambda spec: spec.config.x == 3)},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", max_concurrent_trials=2, reuse_actors=True,
            # max_t above the trials' length: a trial that reaches 50 ends on its own.
            scheduler=ASHAScheduler(max_t=2 * REPORTS, grace_period=5, reduction_factor=2)),
        run_config=tune.RunConfig(name="sweep", storage_path=str(base / "tune"),
                                  callbacks=[callback], verbose=0))


@pytest.fixture(scope="module")
def logged(cluster: None, mlflow_server_pg: MlflowServer, receiver: OtlpReceiver,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both scenarios at once, into one MLflow experiment through one shipper: the
    rollout's 4 actors work (actor 2 waits mid-run to be killed) while the sweep runs."""
    base = tmp_path_factory.mktemp("ray")
    env = _backends(mlflow_server_pg, base / "runs", receiver)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if not key.startswith("_"):
                patch.setenv(key, value)
        with Hub() as hub:
            callback = RlobsTuneCallback("sweep", metric="score", mode="max", hub=hub)
            with hub.run("rollout", params={"actors": ACTORS}) as parent:
                lonely = _start_lonely(patch_env(env), base / "lonely")
                actors, ids, work = _start_rollout(parent, env)
                grid = _tuner(base, callback).fit()
                _kill_victim(actors, ids, work, base / "runs")
        report = sync([base / "runs"], timeout_s=240)  # waits for the shipper to finish
        assert report.complete, report
        assert len(report.runs) == 5 + ACTORS + 1
    yield {"env": env, "grid": {r.config["x"]: r for r in grid}, "runs": base / "runs",
           "callback": callback, "url": mlflow_server_pg.url, "ids": ids,
           "parent": parent.run_id, "lonely": lonely, "receiver": receiver}


@pytest.fixture(scope="module")
def sweep(logged: dict[str, Any]) -> dict[str, Any]:
    """The Tune scenario's results."""
    return logged


@pytest.fixture(scope="module")
def rollout(logged: dict[str, Any]) -> dict[str, Any]:
    """The actors scenario's results."""
    return logged


def _sweep_runs(sweep: dict[str, Any]) -> dict[str, Any]:
    """The sweep's MLflow runs (the experiment holds the rollout's too)."""
    runs = _mlflow_runs(sweep["url"], sweep["env"]["_EXPERIMENT_ID"])
    return {n: r for n, r in runs.items()
            if n == "sweep" or r.data.tags.get("ray.tune.role") == "trial"}


def test_a_sweep_is_one_parent_and_a_child_per_trial(sweep: dict[str, Any]) -> None:
    """MLflow holds the experiment's run and its 4 trials nested under it, with the
    trials' configs as params."""
    runs = _sweep_runs(sweep)
    assert len(runs) == 5
    parent = runs.pop("sweep")
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs.values()} == {
        parent.info.run_id}
    assert sorted(r.data.params["x"] for r in runs.values()) == ["1", "2", "3", "4"]
    assert parent.data.params["total_num_samples"] == "4"
    assert sweep["callback"].errors == 0


def test_every_report_is_one_step_exactly_once(sweep: dict[str, Any]) -> None:
    """Each trial's ``score`` history is its reports 1..n once each, n as Tune counts them."""
    tracking = client(sweep["url"])
    runs = _sweep_runs(sweep)
    by_x = {int(r.data.params["x"]): r for n, r in runs.items() if n != "sweep"}
    for x, result in sweep["grid"].items():
        reported = 3 if x == 3 else int(result.metrics["training_iteration"])
        history = tracking.get_metric_history(by_x[x].info.run_id, "score")
        counts = Counter((m.step, m.value) for m in history)
        assert counts == Counter({(i, float(x * (i + 1))): 1 for i in range(reported)}), x
        nested = tracking.get_metric_history(by_x[x].info.run_id, "nested/x")
        assert len(nested) == reported


def test_trial_states_become_run_statuses(sweep: dict[str, Any]) -> None:
    """TERMINATED → FINISHED; ERROR → FAILED with its error; ASHA's early stops tagged."""
    runs = _sweep_runs(sweep)
    by_x = {int(r.data.params["x"]): r for n, r in runs.items() if n != "sweep"}
    assert by_x[3].info.status == "FAILED"
    assert by_x[3].data.tags["ray.tune.trial_status"] == "ERROR"
    assert sweep["grid"][3].error is not None
    early = []
    for x in (4, 2, 1):
        run, iterations = by_x[x], sweep["grid"][x].metrics["training_iteration"]
        assert run.info.status == "FINISHED", x
        stopped = run.data.tags["ray.tune.stopped_early"] == "true"
        assert stopped == (iterations < REPORTS), (x, iterations)
        early += [x] * stopped
    assert by_x[4].data.tags["ray.tune.stopped_early"] == "false"
    assert early, "ASHA stopped no trial early"
    logs = {log.start.params.get("x"): log for p in sweep["runs"].glob("*.jsonl")
            if (log := read_run(p)).start.name != "sweep"}
    assert "ValueError: diverged" in (logs[3].end.error or "")


def test_the_best_trial_is_tagged_on_the_parent(sweep: dict[str, Any]) -> None:
    """The parent names the trial Tune itself ranks best, and its score."""
    runs = _sweep_runs(sweep)
    parent = runs["sweep"]
    best = sweep["grid"][4]  # x=4 scores highest at every iteration and runs to the end
    assert parent.data.tags["ray.tune.best_trial_id"] == best.metrics["trial_id"]
    best_run = next(r for r in runs.values() if r.data.params.get("x") == "4")
    assert parent.data.tags["ray.tune.best_run_id"] == best_run.data.tags["rlobs.run_id"]
    assert parent.data.metrics["best_score"] == 4.0 * REPORTS


def test_the_trials_traces_hang_off_the_experiments(sweep: dict[str, Any]) -> None:
    """Each trial's run span is a child of the experiment's, in its trace."""
    logs = _logs(sweep["runs"])
    parent_id = logs["sweep"].start.run_id
    trials = [log.start.run_id for log in logs.values() if log.start.parent_id == parent_id]
    assert len(trials) == 4
    _assert_linked(sweep["receiver"], parent_id, trials)


# ---------------------------------------------------------------------- Ray actors


@ray.remote
class Rollout:
    """A rollout worker: one child run for its lifetime, under the driver's parent."""

    def __init__(self, index: int) -> None:
        self.run = worker_run(f"rollout-{index}", tags={"worker": str(index)})

    def run_id(self) -> str:
        return self.run.run_id

    def work(self, steps: int, stop_after: int | None = None) -> int:
        self.run.start()
        for k in range(steps):
            if k == stop_after:
                while True:  # wait here, mid-run, to be killed
                    time.sleep(1)
            self.run.step(float(k), done=(k % 500 == 499))
        self.run.end()
        return self.run.steps


def _start_rollout(parent: Any, env: dict[str, str]) -> tuple[list[Any], list[str], list[Any]]:
    """4 actors × 5k steps under ``parent``, the parent's id in their environment."""
    # No CPU reserved: the sweep's trials take the cluster's two.
    options = {"num_cpus": 0, "runtime_env": {"env_vars": worker_env(parent)}}
    actors = [Rollout.options(**options).remote(i) for i in range(ACTORS)]
    ids = ray.get([a.run_id.remote() for a in actors], timeout=120)
    # A child nests under its parent's MLflow run when its own is created: the actors
    # start their runs once the parent's exists.
    assert poll(lambda: find_run(client(env["MLFLOW_TRACKING_URI"]), parent.run_id),
                timeout_s=60)
    work = [a.work.remote(ACTOR_STEPS, KILL_AFTER if i == VICTIM else None)
            for i, a in enumerate(actors)]
    return actors, ids, work


def _kill_victim(actors: list[Any], ids: list[str], work: list[Any], runs: Path) -> None:
    """Kill actor 2 once its log holds its 2000 steps; the others finish."""
    victim_log = runs / f"{ids[VICTIM]}.jsonl"
    assert poll(lambda: victim_log.exists()
                and len(read_run(victim_log).steps) == KILL_AFTER, timeout_s=60)
    ray.kill(actors[VICTIM])
    finished = ray.get([w for i, w in enumerate(work) if i != VICTIM], timeout=120)
    assert finished == [ACTOR_STEPS] * (ACTORS - 1)


def test_the_killed_actors_run_ends_killed_with_what_it_logged(rollout: dict[str, Any]
                                                               ) -> None:
    """The shipper noticed the dead actor: its log ends ``killed`` at its last step."""
    log = read_run(rollout["runs"] / f"{rollout['ids'][VICTIM]}.jsonl")
    assert log.end is not None and log.end.status is RunStatus.KILLED
    assert [s.step for s in log.steps] == list(range(KILL_AFTER))
    assert log.end.steps == KILL_AFTER
    run = _mlflow_runs(rollout["url"], rollout["env"]["_EXPERIMENT_ID"])[f"rollout-{VICTIM}"]
    assert run.info.status == "KILLED"
    history = client(rollout["url"]).get_metric_history(run.info.run_id, "step_reward")
    assert sorted(m.step for m in history) == list(range(KILL_AFTER))


def test_the_other_actors_runs_are_whole(rollout: dict[str, Any]) -> None:
    """Each surviving actor's 5k steps reach MLflow once each, nested under the parent."""
    tracking = client(rollout["url"])
    runs = _mlflow_runs(rollout["url"], rollout["env"]["_EXPERIMENT_ID"])
    parent = runs["rollout"]
    assert parent.info.status == "FINISHED"
    for index in set(range(ACTORS)) - {VICTIM}:
        run = runs[f"rollout-{index}"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["ray.actor_id"]
        history = tracking.get_metric_history(run.info.run_id, "step_reward")
        counts = Counter((m.step, m.value) for m in history)
        assert counts == Counter({(k, float(k)): 1 for k in range(ACTOR_STEPS)}), index
        assert run.data.metrics["episodes"] == ACTOR_STEPS // 500


def test_the_actors_traces_hang_off_the_parents(rollout: dict[str, Any]) -> None:
    """Each actor's run span — the killed one's too — is a child of the driver's."""
    _assert_linked(rollout["receiver"], rollout["parent"], rollout["ids"])


@ray.remote
class Lonely:
    """An actor that is the first writer of its log directory: it starts the shipper."""

    def log(self, run_id: str, steps: int) -> None:
        with worker_run("lonely", run_id=run_id) as run:
            for k in range(steps):
                run.step(float(k))
        ray.actor.exit_actor()  # a graceful exit: Ray ends the process's children


def _start_lonely(env: dict[str, str], runs: Path) -> tuple[str, Any]:
    """An actor alone in its log directory logs 100 steps and exits at once; returns
    its run id and its handle (kept: the actor leaves on its own)."""
    run_id = f"lonely-{os.getpid()}-{time.time_ns()}"
    env = {**env, "RLOBS_JSONL_DIR": str(runs)}
    actor = Lonely.options(num_cpus=0,
                           runtime_env={"env_vars": worker_env(env=env)}).remote()
    actor.log.remote(run_id, 100)
    return run_id, actor


def test_a_shipper_started_by_an_actor_outlives_the_actor(logged: dict[str, Any]) -> None:
    """The shipper the actor started as its child is not ended with the actor, and
    delivers the actor's run after the actor is gone."""
    tracking = client(logged["url"])

    def delivered() -> Any:
        run = find_run(tracking, logged["lonely"][0])
        return run if run is not None and run.info.status == "FINISHED" else None

    run = poll(delivered, timeout_s=90)
    assert run, "the actor's run never reached MLflow"
    history = tracking.get_metric_history(run.info.run_id, "step_reward")
    assert sorted(m.step for m in history) == list(range(100))


# ---------------------------------------------------------------------- Ray tasks


@ray.remote(num_cpus=0.25, max_calls=0)
def _task(parent_id: str, index: int, steps: int) -> tuple[int, str]:
    with worker_run(f"task-{index}", parent=parent_id) as run:
        for _ in range(steps):
            run.step(float(index))
    return os.getpid(), run.run_id


def test_tasks_in_a_reused_worker_get_fresh_runs(cluster: None, runs_dir: Path) -> None:
    """Three tasks in one worker process: three runs, each whole, none carrying another's
    counts; the parent id travels in the task's arguments."""
    with Hub(["jsonl"]) as hub, hub.run("tasks") as parent:
        env = {"env_vars": worker_env(env={"RLOBS_JSONL_DIR": str(runs_dir),
                                           "RLOBS_SINKS": "jsonl"})}
        out = [ray.get(_task.options(runtime_env=env).remote(parent.run_id, i, 100 + i),
                       timeout=120) for i in range(3)]
    assert len({pid for pid, _ in out}) == 1, "Ray did not reuse the worker process"
    for index, (_, run_id) in enumerate(out):
        log = read_run(runs_dir / f"{run_id}.jsonl")
        assert log.start.parent_id == parent.run_id
        assert [s.step for s in log.steps] == list(range(100 + index))
        assert log.end is not None and log.end.total_reward == index * (100 + index)


# ---------------------------------------------------------------------- docs' recipes

DEPLOYMENT = Path(__file__).parent.parent / "docs" / "deployment.md"
_MARK = "<!-- needs: ray -->"


def _recipes() -> dict[str, str]:
    """docs/deployment.md's Python blocks marked ``needs: ray``, by their ### heading."""
    out: dict[str, str] = {}
    lines = DEPLOYMENT.read_text().splitlines()
    heading = ""
    for i, line in enumerate(lines):
        if line.startswith("### "):
            heading = line[4:].split(":")[0].strip().lower()
        if line.strip() == _MARK:
            assert lines[i + 1] == "```python", f"{_MARK} not followed by a Python block"
            end = lines.index("```", i + 2)
            out[heading] = "\n".join(lines[i + 2:end])
    return out


def _logs(runs: Path) -> dict[str, Any]:
    """Every run log of the directory, by run name."""
    return {log.start.name: log for p in runs.glob("*.jsonl") if (log := read_run(p))}


def _check_actors(ns: dict[str, Any], runs: Path) -> None:
    assert ns["steps"] == [1_000] * 4
    logs = _logs(runs)
    parent = logs.pop("rollout")
    assert sorted(logs) == [f"rollout-{i}" for i in range(4)]
    for log in logs.values():
        assert log.start.parent_id == parent.start.run_id
        assert log.end is not None and log.end.status is RunStatus.FINISHED
        assert (log.end.steps, log.end.episodes) == (1_000, 10)


def _check_tasks(ns: dict[str, Any], runs: Path) -> None:
    assert ns["returns"] == [0.0, 200.0, 400.0]
    logs = _logs(runs)
    parent = logs.pop("evaluation")
    assert sorted(logs) == ["eval-s0", "eval-s1", "eval-s2"]
    assert {log.start.parent_id for log in logs.values()} == {parent.start.run_id}
    assert [log.start.params["seed"] for _, log in sorted(logs.items())] == [0, 1, 2]


def _check_tune(ns: dict[str, Any], runs: Path) -> None:
    logs = _logs(runs)
    parent = logs.pop("lr-sweep")
    grid = {r.config["lr"]: r for r in ns["results"]}
    by_lr = {log.start.params["lr"]: log for log in logs.values()}
    assert sorted(by_lr) == sorted(grid) == [0.01, 0.1]
    for lr, log in by_lr.items():
        assert log.start.parent_id == parent.start.run_id
        assert len(log.steps) == grid[lr].metrics["training_iteration"]
        assert log.end is not None and log.end.status is RunStatus.FINISHED
    tags = {k: v for e in parent.events if hasattr(e, "tags") for k, v in e.tags.items()}
    assert tags["ray.tune.best_run_id"] == by_lr[0.01].start.run_id


def _check_rllib(ns: dict[str, Any], runs: Path) -> None:
    (log,) = _logs(runs).values()
    assert log.start.name == "ppo-cartpole"
    assert log.end is not None and log.end.status is RunStatus.FINISHED
    assert log.steps and all(s.done or s.truncated for s in log.steps)
    # CartPole pays 1 per step: an episode's return is its length.
    assert [s.reward for s in log.steps] == [s.metrics["episode_env_steps"] for s in log.steps]
    assert log.steps[-1].metrics["training_iteration"] == 2
    assert log.end.episodes == len(log.steps)


_CHECKS = {"actors": _check_actors, "tasks": _check_tasks, "ray tune": _check_tune,
           "rllib": _check_rllib}


def test_every_recipe_is_checked() -> None:
    """Each Ray recipe in docs/deployment.md has its check here."""
    assert sorted(_recipes()) == sorted(_CHECKS)


@pytest.mark.parametrize("name", sorted(_CHECKS))
def test_deployment_recipe_runs(name: str, cluster: None, runs_dir: Path,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe runs as written on the module's cluster and logs what the docs say."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__recipe__"}
    exec(compile(_recipes()[name], f"docs/deployment.md ({name})", "exec"), namespace)
    _CHECKS[name](namespace, runs_dir)
