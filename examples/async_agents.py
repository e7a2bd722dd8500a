"""Concurrent LLM-style agents: one parent run, one child run per agent, each tool and
model call a span (model calls also a step, with token usage and cost), all in one anyio
task group.

``rlobs.current_run()`` is a context variable, so each agent task's calls land in its own
run even though they interleave on one event loop. Works the same under asyncio and trio.

    python examples/async_agents.py [--backend trio]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

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


@dataclass
class Reply:
    """A model's answer, shaped like an LLM client's response (usage, stop reason)."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str = "end_turn"


@traced("model.generate", kind="llm", model="toy-model", capture=True, as_step=True,
        reward=lambda reply: float("42" in reply.text))
async def generate(prompt: str, latency_s: float, luck: float) -> Reply:
    await anyio.sleep(latency_s)  # model latency
    text = "the answer is 42" if luck < 0.6 else "not sure"
    return Reply(text, {"input_tokens": len(prompt.split()), "output_tokens": len(text.split())})


async def agent(name: str, turns: int, seed: int) -> None:
    rng = random.Random(seed)
    async with task(f"agents-{name}", params={"turns": turns, "seed": seed}):
        for turn in range(turns):
            docs = await search(f"{name}-q{turn}", rng)
            await calculator(" + ".join(docs))
            await generate(f"{name}: {docs}", rng.uniform(0.002, 0.01), rng.random())


async def main(agents: int, turns: int) -> None:
    rlobs.set_llm_prices({"toy-model": (0.5, 1.5)})  # USD per 1M input / output tokens
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
