"""An acting loop with a compiled SAC actor and one latency span per action.

The actor itself is :class:`rlobs.torch.SACActor` (``rlobs/torch/_sac.py``): 28 → 256 →
256 → mean and clamped log-std heads, ``deterministic() = tanh(mean)``, written to be
scriptable (log-std bounds in ``__constants__``, ``@torch.jit.export`` on
``deterministic``). It lives in the package because ``rlobs bench actor`` measures it.

Run it (``RLOBS_ACTOR_BACKEND`` or ``--backend`` picks the backend; spans go to the
sinks ``RLOBS_SINKS`` selects, JSONL by default)::

    PYTHONPATH=. python examples/sac_actor.py --steps 200
    rlobs show rlobs-runs/<run id>.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

import rlobs
from rlobs.torch import CompiledActor, SACActor, instrument


def make_actor(backend: str | None = None, batch_size: int = 1,
               seed: int = 0) -> CompiledActor:
    """A seeded SAC actor compiled for ``deterministic`` at ``batch_size``."""
    torch.manual_seed(seed)
    model = SACActor().eval()
    example = torch.zeros(batch_size, 28)
    return instrument(model, backend=backend, method="deterministic",
                      example_inputs=(example,))


def act(run: rlobs.Run, actor: CompiledActor, steps: int, batch_size: int = 1,
        seed: int = 0) -> float:
    """A stand-in environment loop: random observations, reward = -|action|².

    Returns:
        The total reward.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for t in range(steps):
            obs = torch.randn(batch_size, 28, generator=generator)
            action = actor(obs)  # one "actor.deterministic" span when a sink wants spans
            reward = -float(action.pow(2).sum())
            run.step(reward, done=(t + 1) % 50 == 0)
    return run.total_reward


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, act for ``--steps`` steps inside a run, print what ran."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", default=None, help="auto, onnx, export, script, compile, "
                        "cudagraph, eager (default: RLOBS_ACTOR_BACKEND, else auto)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args(argv)
    actor = make_actor(args.backend, args.batch_size)
    with rlobs.Hub.from_env() as hub, hub.run("sac-actor", params=vars(args)) as run:
        run.set_tags({"actor.backend": actor.backend})
        total = act(run, actor, args.steps, args.batch_size)
    print(f"{actor!r}")
    if actor.selection is not None:
        print(f"auto: {actor.selection.reason}")
    print(f"run {run.run_id}: {run.steps} steps, total reward {total:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
