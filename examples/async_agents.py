"""Concurrent LLM-style agents: one parent run, one child run per agent, each tool and
model call a span (model calls also a step), all in one anyio task group.

``rlobs.current_run()`` is a context variable, so each agent task's calls land in its own
run even though they interleave on one event loop. Works the same under asyncio and trio.

    python examples/async_agents.py [--backend trio]
"""

from __future__ import annotations

import argparse
import random

import anyio

import rlobs
from rlobs.integrations import task, traced


@traced("tool.search", kind="tool")
async def search(query: str, rng: random.Random) -> list[str]:
    await anyio.sleep(rng.uniform(0.001, 0.005))  # a network round trip
    return [f"{query}-doc{i}" for i in range(3)]


@traced("tool.calculator", kind="tool")
async def calculator(expression: str) -> float:
    await anyio.sleep(0)
    return float(len(expression))


@traced("model.generate", kind="llm", model="toy-model", as_step=True,
        reward=lambda answer: float("42" in answer))
async def generate(prompt: str, rng: random.Random) -> str:
    await anyio.sleep(rng.uniform(0.002, 0.01))  # model latency
    return "the answer is 42" if rng.random() < 0.6 else "not sure"


async def agent(name: str, turns: int, seed: int) -> None:
    rng = random.Random(seed)
    async with task(f"agents-{name}", params={"turns": turns, "seed": seed}):
        for turn in range(turns):
            docs = await search(f"{name}-q{turn}", rng)
            await calculator(" + ".join(docs))
            await generate(f"{name}: {docs}", rng)


async def main(agents: int, turns: int) -> None:
    team = rlobs.run("agents-team", params={"agents": agents, "turns": turns})
    async with team, anyio.create_task_group() as tg:
        for i in range(agents):
            tg.start_soon(agent, f"agent{i}", turns, i)
    print(f"team run {team.run_id}: {agents} agents x {turns} turns")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.agents, args.turns, backend=args.backend)
