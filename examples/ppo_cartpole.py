"""A PPO training loop on CartPole with the Gymnasium wrapper and a latency span.

The wrapper records every env step (reward, done/truncated, episode return and length)
into the current run with no other change to the loop; ``run.span("actor.forward")``
times the policy (a tiny eager torch MLP) so ``rlobs plot`` can draw its latency
histogram. Losses are logged once per update with ``run.log_summary``.

    python examples/ppo_cartpole.py --seed 0 --lr 3e-3
    rlobs plot rlobs-runs/<id>.jsonl -o reward.png
    rlobs compare rlobs-runs --by lr --plot curves.png    # after a few seeds per lr
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical

import rlobs
from rlobs.integrations.gymnasium import RecordEpisodes


class ActorCritic(nn.Module):
    def __init__(self, obs: int, actions: int, hidden: int = 32) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, actions))
        self.v = nn.Sequential(nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def collect(env: gym.Env, model: ActorCritic, run: rlobs.Run, obs: torch.Tensor,  # type: ignore[type-arg]
            n_steps: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    keys = ("obs", "action", "logp", "reward", "done", "value")
    batch: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for _ in range(n_steps):
        with torch.no_grad(), run.span("actor.forward"):
            dist = Categorical(logits=model.pi(obs))
            action = dist.sample()
            value = model.v(obs).squeeze(-1)
        next_obs, reward, terminated, truncated, _ = env.step(int(action))
        for key, item in zip(keys, (obs, action, dist.log_prob(action),
                                    torch.tensor(float(reward)),
                                    torch.tensor(float(terminated)), value), strict=True):
            batch[key].append(item)
        if terminated or truncated:
            next_obs, _ = env.reset()
        obs = torch.as_tensor(next_obs, dtype=torch.float32)
    return {k: torch.stack(v) for k, v in batch.items()}, obs


def advantages(b: dict[str, torch.Tensor], last_value: torch.Tensor, gamma: float,
               lam: float) -> torch.Tensor:
    adv = torch.zeros_like(b["reward"])
    gae, next_value = torch.tensor(0.0), last_value
    for t in reversed(range(len(adv))):
        live = 1.0 - b["done"][t]
        delta = b["reward"][t] + gamma * next_value * live - b["value"][t]
        gae = delta + gamma * lam * live * gae
        adv[t], next_value = gae, b["value"][t]
    return adv


class Adam:
    """Plain Adam. ``torch.optim``'s first use imports the dynamo compiler (seconds on a
    small CPU), too slow for an example meant to finish in seconds."""

    def __init__(self, params: list[nn.Parameter], lr: float, eps: float = 1e-8) -> None:
        self.params, self.lr, self.eps, self.t = params, lr, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, b1: float = 0.9, b2: float = 0.999) -> None:
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))


def update(model: ActorCritic, opt: Adam, b: dict[str, torch.Tensor],
           adv: torch.Tensor, clip: float, epochs: int = 4, minibatch: int = 64
           ) -> dict[str, float]:
    returns = adv + b["value"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    for _ in range(epochs):
        for idx in torch.randperm(len(adv)).split(minibatch):
            dist = Categorical(logits=model.pi(b["obs"][idx]))
            ratio = (dist.log_prob(b["action"][idx]) - b["logp"][idx]).exp()
            pg = -torch.min(ratio * adv[idx], ratio.clamp(1 - clip, 1 + clip) * adv[idx]).mean()
            vf = (model.v(b["obs"][idx]).squeeze(-1) - returns[idx]).pow(2).mean()
            loss = pg + 0.5 * vf - 0.01 * dist.entropy().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"train/policy_loss": pg.detach().item(), "train/value_loss": vf.detach().item(),
            "train/loss": loss.detach().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # batch-1 inference: threads only add contention
    params = {"algo": "ppo", "env": "CartPole-v1", "lr": args.lr, "gamma": 0.99,
              "gae_lambda": 0.95, "clip": 0.2, "n_steps": args.n_steps, "seed": args.seed}
    env = RecordEpisodes(gym.make("CartPole-v1"), span="env.step")
    model = ActorCritic(4, 2)
    opt = Adam(list(model.parameters()), lr=args.lr)
    with rlobs.run("ppo-cartpole", params=params, tags={"algo": "ppo"},
                   experiment="cartpole") as run:
        first, _ = env.reset(seed=args.seed)
        obs = torch.as_tensor(first, dtype=torch.float32)
        for iteration in range(args.iterations):
            batch, obs = collect(env, model, run, obs, args.n_steps)
            with torch.no_grad():
                last_value = model.v(obs).squeeze(-1)
            adv = advantages(batch, last_value, params["gamma"], params["gae_lambda"])
            with run.span("learner.update", iteration=iteration):
                losses = update(model, opt, batch, adv, params["clip"])
            run.log_summary({**losses, "train/iteration": iteration})
    print(f"run {run.run_id}: {run.steps} steps, {run.episodes} episodes")


if __name__ == "__main__":
    main()
