"""Plain loops and agent tasks: one call is one run; one tool or model call is a span.

Both helpers find their run through :func:`rlobs.current_run`, a context variable, so
concurrent tasks (``asyncio.gather``, anyio/trio task groups, threads started with
``contextvars.copy_context``) each keep their events under their own run.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from .._clock import wall_ns
from .._hub import Hub, default_hub
from .._llm import check_kind, usage_of
from .._log import logger
from .._run import Run, current_run
from .._span import SpanScope

P = ParamSpec("P")
R = TypeVar("R")

_SCALARS = (bool, int, float, str)
_UNSET: Any = object()


class Task:
    """A run per call of a function, or per ``with`` block. Build it with :func:`task`."""

    def __init__(self, name: str | None, *, params: Mapping[str, Any] | None,
                 tags: Mapping[str, Any] | None, parent: Run | str | None,
                 hub: Hub | None, record_args: bool) -> None:
        self.name = name
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.parent = parent
        self.hub = hub
        self.record_args = record_args
        self._entered: contextvars.ContextVar[list[Run]] = contextvars.ContextVar(
            f"rlobs_task_{id(self)}")

    def new_run(self, name: str | None = None, params: Mapping[str, Any] | None = None) -> Run:
        """A new (not yet started) run with this task's settings."""
        parent = current_run() if self.parent is _UNSET else self.parent
        hub = self.hub or default_hub()
        return hub.run(name or self.name or "task", params={**self.params, **(params or {})},
                       tags=self.tags, parent=parent)

    # ------------------------------------------------------------------ context manager

    def _push(self, run: Run) -> None:
        stack = self._entered.get(None)
        self._entered.set([*(stack or []), run])

    def _pop(self) -> Run:
        stack = list(self._entered.get())
        run = stack.pop()
        self._entered.set(stack)
        return run

    def __enter__(self) -> Run:
        run = self.new_run()
        entered = run.__enter__()
        self._push(run)
        return entered

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pop().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Run:
        run = self.new_run()
        entered = await run.__aenter__()
        self._push(run)
        return entered

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._pop().__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ decorator

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._run_for(func, args, kwargs) as run:
                    result = await func(*args, **kwargs)
                    _log_result(run, result)
                    return result
            return run_async

        @functools.wraps(func)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self._run_for(func, args, kwargs) as run:
                result = func(*args, **kwargs)
                _log_result(run, result)
                return result
        return run_sync

    def _run_for(self, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Run:
        params = _scalar_args(func, args, kwargs) if self.record_args else {}
        return self.new_run(self.name or func.__qualname__, params)


def task(name: str | None = None, *, params: Mapping[str, Any] | None = None,
         tags: Mapping[str, Any] | None = None, parent: Run | str | None = _UNSET,
         hub: Hub | None = None, record_args: bool = True) -> Task:
    """Make each call of a function (sync or async), or a ``with`` block, one run.

    As a decorator, the function's scalar arguments (bool, int, float, str) become params,
    and a returned number (``result``) or mapping of numbers becomes the run's summary
    metrics. Inside, :func:`rlobs.current_run` is the new run. An exception ends the run
    ``failed`` and propagates.

    Args:
        name: the run name; default the function's qualified name (``"task"`` in ``with``).
        params: params added to every run.
        tags: tags of every run.
        parent: the parent run or id; default the run current at call time, if any, so
            tasks started inside a run become its children.
        hub: the hub; default :func:`rlobs.default_hub`.
        record_args: record the function's scalar arguments as params.

    Returns:
        A :class:`Task`, usable as ``@task(...)``, ``with task(...) as run`` or
        ``async with task(...) as run``.
    """
    return Task(name, params=params, tags=tags, parent=parent, hub=hub,
                record_args=record_args)


def _scalar_args(func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):  # builtins without a signature, or a bad call
        return {}
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if isinstance(v, _SCALARS)}


def _log_result(run: Run, result: Any) -> None:
    if isinstance(result, bool):
        run.log_summary({"result": float(result)})
    elif isinstance(result, int | float):
        run.log_summary({"result": result})
    elif isinstance(result, Mapping):
        numbers = {str(k): v for k, v in result.items() if isinstance(v, int | float)}
        if numbers:
            run.log_summary(numbers)


def traced(name: str | None = None, *, as_step: bool = False,
           reward: Callable[[Any], float] | None = None, kind: str | None = None,
           model: str | None = None, capture: bool = False,
           usage: Callable[[Any], Mapping[str, Any]] | None = None,
           **attributes: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record each call of a (sync or async) function — a tool or model call — in the
    current run: a span named ``name``, and with ``as_step`` also one step.

    Outside a run the function runs untouched. The step's metrics are ``latency_ms``
    and ``error`` (1.0 if it raised); its reward is ``reward(result)`` (0 without it or
    on error).

    Args:
        name: the span name; default the function's qualified name.
        as_step: also record one step per call.
        reward: computes the step's reward from the call's result.
        kind: ``"llm"``, ``"tool"``, ``"agent"``, ``"chain"``, ``"retriever"`` or
            ``"embedding"``: what trace viewers show the span as.
        model: the model an ``llm`` call asks (``gen_ai.request.model``).
        capture: record the call's arguments and result as the span's input and output
            (redacted, cut to ``RLOBS_CAPTURE_MAX_CHARS``). Off by default.
        usage: reads ``input_tokens``, ``output_tokens``, ``finish_reasons``, ``model``
            (any of them) from the result; for ``kind="llm"`` without it, OpenAI- and
            Anthropic-style responses are read as they are.
        attributes: span attributes.

    Raises:
        ValueError: ``kind`` is not one of those.
    """
    check_kind(kind)
    llm = kind == "llm" or model is not None or usage is not None

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        label = name or func.__qualname__
        call = _Call(func, kind, model, capture, usage if usage is not None else
                     (usage_of if llm else None), attributes)
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def call_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                run = current_run()
                if run is None:
                    return await func(*args, **kwargs)
                start, result, failed = wall_ns(), None, True
                try:
                    with run.span(label, **call.attributes) as scope:
                        call.before(scope, args, kwargs)
                        result = await func(*args, **kwargs)
                        failed = False
                        call.after(scope, result)
                finally:  # after the span: it belongs to this step, not the next
                    _step(run, as_step, reward, result, failed, start)
                return result
            return cast(Callable[P, R], call_async)

        @functools.wraps(func)
        def call_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            run = current_run()
            if run is None:
                return func(*args, **kwargs)
            start, result, failed = wall_ns(), None, True
            try:
                with run.span(label, **call.attributes) as scope:
                    call.before(scope, args, kwargs)
                    result = func(*args, **kwargs)
                    failed = False
                    call.after(scope, result)
            finally:  # after the span: it belongs to this step, not the next
                _step(run, as_step, reward, result, failed, start)
            return result
        return call_sync
    return decorate


class _Call:
    """What a traced function records besides its timing."""

    def __init__(self, func: Callable[..., Any], kind: str | None, model: str | None,
                 capture: bool, usage: Callable[[Any], Mapping[str, Any]] | None,
                 attributes: Mapping[str, Any]) -> None:
        self.func = func
        self.model = model
        self.capture = capture
        self.usage = usage
        self.attributes = {**attributes, **({"kind": kind} if kind else {})}

    def before(self, scope: SpanScope, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.capture:
            scope.io(input=_arguments(self.func, args, kwargs))

    def after(self, scope: SpanScope, result: Any) -> None:
        if self.capture:
            scope.io(output=result)
        if self.usage is None:
            return
        try:
            found = dict(self.usage(result) or {})
        except Exception as exc:  # a bad reader must not break the agent's call
            logger.warning("usage function failed", error=f"{type(exc).__name__}: {exc}")
            found = {}
        if found or self.model is not None:
            scope.llm(found.get("model", self.model), input_tokens=found.get("input_tokens"),
                      output_tokens=found.get("output_tokens"),
                      finish_reasons=found.get("finish_reasons"),
                      cost_usd=found.get("cost_usd"))


def _arguments(func: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """A call's arguments by name (one argument: itself)."""
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return {"args": list(args), **kwargs}
    named = dict(bound.arguments)
    return next(iter(named.values())) if len(named) == 1 else named


def _step(run: Run, as_step: bool, reward: Callable[[Any], float] | None, result: Any,
          failed: bool, start: int) -> None:
    if not as_step:
        return
    value = 0.0
    if reward is not None and not failed:
        try:
            value = reward(result)
        except Exception as exc:  # a bad scorer must not break the agent's call
            value = math.nan
            logger.warning("reward function failed; step reward is NaN", span=run.name,
                           error=f"{type(exc).__name__}: {exc}")
    run.step(value, {"latency_ms": (wall_ns() - start) / 1e6, "error": float(failed)})
