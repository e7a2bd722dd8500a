"""Stable-Baselines3: a callback that records training into a run.

``model.learn(10_000, callback=RlobsCallback())`` opens a run when training starts (its
params are the model's hyperparameters, the policy's defaults included), records one
step per vector env step on SB3's ``num_timesteps`` axis (see :mod:`._vector` and
docs/integrations.md), puts every value SB3's logger dumps (``rollout/ep_rew_mean``,
``train/approx_kl``, ``time/fps``, …) on the step at which it was dumped, and ends the
run when training ends. A step is recorded as SB3 hands it over, unless SB3 may dump
right after it (then it waits for the dump): spans recorded while the policy takes the
next action (an instrumented actor's) land on the step that action is for.

The callback only uses SB3's callback hooks and a logger output: it stores nothing on
the model, so ``model.save()`` inside ``learn()`` (``CheckpointCallback``,
``EvalCallback(best_model_save_path=…)``) pickles what it would without it. SB3 does not
tell callbacks about exceptions; a run whose ``learn()`` raised is ended ``failed`` (or
``killed`` for KeyboardInterrupt) by whichever comes first: the next ``learn()`` in the
same context, the interpreter's hook for an uncaught exception, or interpreter exit.

Importing this module imports stable_baselines3 (and numpy); ``import rlobs`` does not.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from .._hub import Hub, default_hub
from .._lifecycle import last_interrupt_ns
from .._log import logger
from .._run import Run, current_run, status_for
from .._values import as_number
from ._vector import VectorEpisodes

HYPERPARAMETERS = (
    "learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda",
    "clip_range", "clip_range_vf", "normalize_advantage", "ent_coef", "vf_coef",
    "max_grad_norm", "use_sde", "sde_sample_freq", "target_kl", "buffer_size",
    "learning_starts", "tau", "train_freq", "gradient_steps", "target_update_interval",
    "target_entropy", "exploration_fraction", "exploration_initial_eps",
    "exploration_final_eps", "seed", "device", "n_envs",
)
"""Model attributes recorded as params when present (``policy_kwargs`` separately)."""

STEP_AXES = ("timesteps", "vector_steps")
"""``timesteps``: a step's index is SB3's ``num_timesteps`` − 1 (each vector step stands
for ``n_envs`` env steps), as SB3's logger and TensorBoard count; ``vector_steps``: one
index per vector step."""

_NOT_POLICY_KWARGS = ("observation_space", "action_space", "lr_schedule")
_INTERRUPTED = "learn() interrupted by SIGINT (Ctrl-C)"
_UNFINISHED = ("learn() stopped before training ended (an exception SB3 does not pass to "
               "callbacks)")


def readable(value: Any) -> Any:
    """A param value people can read: enums as their value, named tuples (``TrainFreq``)
    as lists, classes and functions by name, schedules at their starting value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return readable(value.value)
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, Mapping):
        return {str(k): readable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable(v) for v in value]
    if getattr(value, "ndim", 0) != 0 and hasattr(value, "tolist"):  # an array
        return readable(value.tolist())
    if callable(value) and not hasattr(value, "ndim"):  # an SB3 schedule: 1.0 = start
        try:
            return readable(value(1.0))
        except Exception:
            return getattr(value, "__name__", str(value))
    number = as_number(value)
    return number if number is not None else str(value)


def hyperparameters(model: Any) -> dict[str, Any]:
    """The model's hyperparameters as params; ``policy_kwargs`` is what the policy was
    built with (SB3's defaults, e.g. ``net_arch``, with the user's on top)."""
    params: dict[str, Any] = {"algo": type(model).__name__,
                              "policy": type(getattr(model, "policy", None)).__name__}
    for name in HYPERPARAMETERS:
        if hasattr(model, name):
            params[name] = readable(getattr(model, name))
    params["policy_kwargs"] = readable({**_policy_defaults(model),
                                        **(getattr(model, "policy_kwargs", None) or {})})
    spec = getattr(getattr(model, "env", None), "spec", None) or _first_spec(model)
    if spec is not None:
        params["env_id"] = getattr(spec, "id", str(spec))
    return params


def _policy_defaults(model: Any) -> dict[str, Any]:
    try:
        built = model.policy._get_constructor_parameters()
    except Exception:  # a custom policy without SB3's constructor record
        return {}
    return {k: v for k, v in built.items() if k not in _NOT_POLICY_KWARGS}


def _first_spec(model: Any) -> Any:
    try:
        return model.env.get_attr("spec", [0])[0]
    except Exception:  # not every VecEnv exposes its sub-envs' specs
        return None


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of an SB3 log dump (numpy and torch scalars included)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool | str) or value is None or getattr(value, "ndim", 0) != 0:
            continue  # flags, text, arrays (histograms), None
        number = as_number(value)
        if number is not None:
            out[key] = float(number)
    return out


class _Collector(KVWriter):
    """An SB3 log output: hands each dump's numeric values to the callback."""

    def __init__(self, callback: RlobsCallback) -> None:
        self._callback = weakref.ref(callback)
        self.latest: dict[str, float] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any],
              step: int = 0) -> None:
        try:
            values = _numbers(key_values)
            self.latest.update(values)
            callback = self._callback()
            if callback is not None:
                callback._dumped(values)
        except Exception as exc:  # an output of SB3's logger must never break training
            logger.warning("sb3 log dump not recorded", error=repr(exc))

    def close(self) -> None:
        pass


class RlobsCallback(BaseCallback):
    """Records an SB3 training run (see the module docstring).

    Args:
        name: the run name; default ``sb3-<algo>``.
        run: record into this run (not ended by the callback); default the current run
            if any, else a new run opened at training start and ended at its end.
        hub: the hub for a new run; default :func:`rlobs.default_hub`.
        params: extra params for a new run.
        tags: tags for a new run.
        run_id: the id of a new run; a log that already holds it is resumed.
        per_env_metrics: record ``env/<i>/episode_return`` metrics.
        step_axis: ``"timesteps"`` (default: SB3's ``num_timesteps``, as TensorBoard)
            or ``"vector_steps"`` (see :data:`STEP_AXES`).
        verbose: SB3's convention: 0 only the ``rlobs`` logger, 1 also prints where the
            run goes when training starts and how it ended.

    ``learn(reset_num_timesteps=False)`` with the same callback continues its last run
    (a resumed segment of the same log), as TensorBoard continues its curve.
    """

    def __init__(self, name: str | None = None, *, run: Run | None = None,
                 hub: Hub | None = None, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, run_id: str | None = None,
                 per_env_metrics: bool = True, step_axis: str = "timesteps",
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if step_axis not in STEP_AXES:
            raise ValueError(f"step_axis must be one of {STEP_AXES}, not {step_axis!r}")
        self.name = name
        self.hub = hub
        self.extra_params = dict(params or {})
        self.tags = dict(tags or {})
        self.per_env_metrics = per_env_metrics
        self.step_axis = step_axis
        self._given = run
        self._run_id = run_id
        self.run: Run | None = None
        self.last_run: Run | None = None
        self._owned = False
        self._learn_frame: FrameType | None = None
        self._collector: _Collector | None = None
        self._episodes: VectorEpisodes | None = None
        self._single = False
        self._held: tuple[float, dict[str, float], int] | None = None
        self._pending: dict[str, float] = {}
        self._raw_rewards: Any = None
        self._monitored = False
        self._off_policy = False
        self._env_steps = 1
        self._thread: int | None = None
        self._opened_on: Hub | None = None  # the hub of the run this callback opened
        self._began_ns = 0  # when learn() began (monotonic)

    # ------------------------------------------------------------------ what users read

    @property
    def run_id(self) -> str | None:
        """The id of the run being recorded, else of the last one (``None`` before)."""
        run = self.run or self.last_run
        return run.run_id if run is not None else None

    def mlflow_run_id(self, *, tracking_uri: str | None = None,
                      timeout_s: float = 10.0) -> str | None:
        """The MLflow run id of this callback's run when the MLflow sink records it.

        The shipper creates the MLflow run shortly after the run starts; this waits up to
        ``timeout_s`` for it, found by its ``rlobs.run_id`` tag on ``tracking_uri``:
        by default where the MLflow sink of the run's hub writes (the embedded store in
        the log directory when no URI is set), or for a run this callback did not open,
        ``MLFLOW_TRACKING_URI`` or the embedded store of ``RLOBS_JSONL_DIR``. ``None``
        when there is no run, when the hub that opened it has no MLflow sink (at once),
        or when MLflow has none for it in time.

        Raises:
            SinkUnavailable: mlflow is not installed.
        """
        run_id = self.run_id
        if run_id is None:
            return None
        if tracking_uri is None and self._opened_on is not None:
            stores = [getattr(sink, "tracking_uri", None) for sink in self._opened_on.sinks
                      if sink.name == "mlflow"]
            if not stores:
                return None  # nothing records it in MLflow: do not wait for it
            tracking_uri = stores[0]
        from sinks.mlflow import mlflow_run_id  # lazy: only when asked, mlflow is heavy

        hub = self._opened_on
        deadline = time.monotonic() + timeout_s
        while True:
            # Before the sink has opened its store, a reader opening the embedded one
            # would race its creation (both would create its tables).
            if hub is None or _mlflow_opened(hub):
                found = mlflow_run_id(run_id, tracking_uri=tracking_uri)
                if found is not None:
                    return found
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    # ------------------------------------------------------------------ SB3 hooks

    def _on_training_start(self) -> None:
        _end_stale_runs(self)
        self._began_ns = time.monotonic_ns()
        params = {**hyperparameters(self.model), "n_envs": self.model.n_envs,
                  "step_axis": self.step_axis, **self.extra_params}
        existing = self._given or current_run()
        if existing is not None:
            self.run, self._owned = existing, False
            existing.log_params(params)
        else:
            self.run, self._owned = self._open(params), True
        self._learn_frame = _learn_frame(self.model)
        _track(self)
        self._collector = _Collector(self)
        self.model.logger.output_formats.append(self._collector)
        self._setup_env()
        self._say(self._where())

    def _on_rollout_start(self) -> None:
        self._write_held()  # before the rollout's first action
        if self._off_policy:  # losses of the train() just done, not only at log dumps
            self._pending.update(_numbers({k: v for k, v in
                                           self.model.logger.name_to_value.items()
                                           if k.startswith("train/")}))

    def _on_step(self) -> bool:
        run, episodes = self.run, self._episodes
        if run is None or episodes is None:
            return True
        rewards = self.locals.get("rewards")
        dones = self.locals.get("dones")
        if rewards is None or dones is None:
            return True
        if self._raw_rewards is not None:
            rewards = self._raw_rewards()
        if self._single and not dones[0]:  # the usual step of one env: no numpy calls
            reward = float(rewards[0])
            episodes.returns[0] += reward
            episodes.lengths[0] += 1
            self._write_held()
            metrics: dict[str, float] = {}
            if self._pending:
                metrics, self._pending = self._pending, {}
            self._held = (reward, metrics, 0)
            if not self._dump_may_follow(0):
                self._write_held()
            return True
        ended = np.asarray(dones, dtype=bool)
        finished: dict[int, tuple[float, int]] = {}
        if ended.any():
            ended, finished = self._monitor_episodes(ended)
        reward, metrics, n_ended = episodes.update(rewards, ended, finished=finished)
        self._write_held()
        if self._pending:
            metrics.update(self._pending)
            self._pending = {}
        self._held = (reward, metrics, n_ended)
        if not self._dump_may_follow(int(np.count_nonzero(dones))):
            self._write_held()
        return True

    def _on_training_end(self) -> None:
        self._finish(None)

    # ------------------------------------------------------------------ internals

    def _open(self, params: dict[str, Any]) -> Run:
        hub = self.hub or default_hub()
        name = self.name or f"sb3-{type(self.model).__name__.lower()}"
        run_id = self._run_id
        resume = self.locals.get("reset_num_timesteps") is False
        if run_id is None and resume and self.model.num_timesteps > 0 and self.last_run:
            run_id = self.last_run.run_id
        run = hub.run(name, params=params, tags=self.tags, run_id=run_id)
        self._opened_on = hub
        return run.__enter__()

    def _setup_env(self) -> None:
        model = self.model
        self._env_steps = model.n_envs if self.step_axis == "timesteps" else 1
        self._off_policy = isinstance(model, OffPolicyAlgorithm)
        self._episodes = VectorEpisodes(model.n_envs, per_env_metrics=self.per_env_metrics)
        self._single = model.n_envs == 1
        self._held, self._pending = None, {}
        try:
            self._monitored = bool(any(self.training_env.env_is_wrapped(Monitor)))
        except Exception:  # a VecEnv that cannot tell
            self._monitored = False
        normalize = model.get_vec_normalize_env()
        self._raw_rewards = None if normalize is None else normalize.get_original_reward
        if normalize is not None and self.run is not None:
            self.run.set_tags({"rlobs.reward": "raw (VecNormalize.get_original_reward())"})

    def _monitor_episodes(self, ended: Any) -> tuple[Any, dict[int, tuple[float, int]]]:
        """Episodes ended as SB3's Monitor reports them (in ``infos``): with a Monitor, a
        ``done`` without its ``episode`` (a lost life under EpisodicLifeEnv) ends none."""
        infos = self.locals.get("infos") or ()
        finished: dict[int, tuple[float, int]] = {}
        for i in np.flatnonzero(ended).tolist():
            info = infos[i] if i < len(infos) else None
            episode = info.get("episode") if isinstance(info, dict) else None
            if episode is not None:
                finished[i] = (float(episode["r"]), int(episode["l"]))
        if self._monitored:
            ended = np.zeros_like(ended)
            ended[list(finished)] = True
        return ended, finished

    def _dump_may_follow(self, dones: int) -> bool:
        """Whether SB3 may dump its logs before its next action: on-policy after a
        rollout's last step, off-policy after a ``done`` that makes ``log_interval``
        episodes (SB3 counts one per ``done``, a lost life under EpisodicLifeEnv too).
        Only then is the step held back for the values (they belong on it); any other
        step is recorded at once, so that what the policy records while taking the next
        action (an instrumented actor's spans) lands on the next step."""
        found = self.locals
        try:
            if not self._off_policy:
                return bool(found["n_steps"] + 1 >= found["n_rollout_steps"])
            interval = found.get("log_interval")
            if not dones or not interval:
                return False
            counted = self.model._episode_num  # SB3 counts this step's after on_step
            return any((counted + k) % interval == 0 for k in range(1, dones + 1))
        except Exception:  # an algorithm of its own: hold every step, as SB3 may dump
            return True

    def _dumped(self, values: dict[str, float]) -> None:
        """SB3 dumped its logs: the values go on the step at which it did."""
        if self.run is None:
            return
        if self._held is not None:
            self._held[1].update(values)
            self._write_held()  # what it was held for
        else:
            self._pending.update(values)

    def _write_held(self) -> None:
        held, run = self._held, self.run
        if held is None or run is None:
            return
        self._held = None
        run.step(held[0], held[1], episodes=held[2], env_steps=self._env_steps)

    def _finish(self, exc: BaseException | None) -> None:
        """Write what is held, leave SB3's logger as it was, end the run if it is ours."""
        run = self.run
        if run is None:
            return
        self._write_held()
        self.run, self.last_run, self._learn_frame = None, run, None
        _untrack(self)
        collector, self._collector = self._collector, None
        # The user may have replaced or closed the logger mid-training.
        with contextlib.suppress(ValueError, AttributeError):
            self.model.logger.output_formats.remove(collector)  # type: ignore[arg-type]
        summary = _numbers(getattr(self.model.logger, "name_to_value", {}))
        if collector is not None:
            summary.update(collector.latest)  # what SB3 dumped last wins
        if self._pending:  # values of a dump after the last step
            summary.update(self._pending)
            self._pending = {}
        if summary:
            run.log_summary(summary)
        if self._owned:
            status, _ = status_for(exc)
            tb = exc.__traceback__ if exc is not None else None
            run.__exit__(type(exc) if exc is not None else None, exc, tb)
            self._say(f"rlobs: run {run.name!r} ({run.run_id}) ended {status.value}")

    def _abandon(self, exc: BaseException | None) -> None:
        """End a run whose learn() raised (found stale, or at an uncaught exception)."""
        run = self.run
        if run is None:
            return
        if not run.active:  # ended meanwhile (a signal handler ended every open run)
            self.run, self.last_run, self._learn_frame = None, run, None
            _untrack(self)
            return
        if exc is None:  # SB3 passes no exception to callbacks: what stopped learn()?
            # A Ctrl-C the program caught? (KeyboardInterrupt is raised on the main thread)
            interrupted = (self._thread == threading.main_thread().ident
                           and last_interrupt_ns() > self._began_ns)
            exc = KeyboardInterrupt(_INTERRUPTED) if interrupted else RuntimeError(_UNFINISHED)
        with contextlib.suppress(Exception):  # never let cleanup hide the user's error
            self._finish(exc)
        self.run = None

    def _where(self) -> str:
        run = self.run
        if run is None:
            return ""
        if not self._owned:
            return f"rlobs: recording into run {run.name!r} ({run.run_id})"
        hub = self.hub or default_hub()
        sinks = ", ".join(s.name for s in hub.status()) or "no sink"
        return (f"rlobs: recording run {run.name!r} ({run.run_id}) to {sinks}; log "
                f"{run.log_path or '(none)'}")

    def _say(self, line: str) -> None:
        logger.info(line)
        if self.verbose >= 1:  # SB3's convention: verbose 1 prints info messages
            sys.stdout.write(line + "\n")


def _mlflow_opened(hub: Hub) -> bool:
    """Whether the hub's MLflow sink (in the shipper or in this process) has opened its
    store: it has taken events, which it does only once open."""
    return any(s.name == "mlflow" and s.delivered > 0 for s in hub.status())


# ---------------------------------------------------------------------- stale runs

_training: set[RlobsCallback] = set()
"""Callbacks whose run is open: held strongly, so a callback dropped after its learn()
raised (and its stale run, still current) is found by the next learn()."""
_lock = threading.Lock()
_hooks_installed = False


def _learn_frame(model: Any) -> FrameType | None:
    """The frame of the model's ``learn()`` that is calling the callback."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "learn" and frame.f_locals.get("self") is model:
            return frame
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _on_stack(target: FrameType | None) -> bool:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


def _end_stale_runs(starting: RlobsCallback) -> None:
    """End the runs of this thread's callbacks whose learn() is no longer running."""
    me = threading.get_ident()
    for callback in list(_training):
        if callback.run is None or callback._thread != me:
            continue
        if callback is starting or not _on_stack(callback._learn_frame):
            callback._abandon(sys.exc_info()[1])


def _track(callback: RlobsCallback) -> None:
    global _hooks_installed
    callback._thread = threading.get_ident()
    with _lock:
        _training.add(callback)
        if not _hooks_installed:
            _install_hooks()
            _hooks_installed = True


def _untrack(callback: RlobsCallback) -> None:
    with _lock:
        _training.discard(callback)


def _install_hooks() -> None:
    """Uncaught exceptions and interpreter exit end the runs left open by learn()."""
    previous_hook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException,
                   tb: TracebackType | None) -> None:
        _abandon_all(exc, threading.main_thread().ident)
        previous_hook(kind, exc, tb)

    def thread_excepthook(args: Any) -> None:
        if args.exc_value is not None and args.thread is not None:
            _abandon_all(args.exc_value, args.thread.ident)
        previous_thread_hook(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    atexit.register(_abandon_all, None, None)  # after the hub's: so it runs before it


def _abandon_all(exc: BaseException | None, thread: int | None) -> None:
    for callback in list(_training):
        if thread is None or callback._thread == thread:
            callback._abandon(exc)
