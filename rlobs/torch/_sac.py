"""The reference SAC actor: the shape the compiled-actor benchmark measures.

Written to be scriptable by ``torch.jit.script``, which needed three things of the
original design: the log-std bounds are ``__constants__`` (TorchScript cannot read module
globals), ``deterministic`` is a ``@torch.jit.export`` method (scripting compiles only
``forward`` and what it calls otherwise), and every method has annotated tensor types.
"""

from __future__ import annotations

import torch
from torch import nn


class SACActor(nn.Module):
    """Gaussian SAC policy head: an MLP body, a mean head and a clamped log-std head.

    Args:
        state_dim: observation size (28 in the original design).
        action_dim: action size.
        hidden: width of the two hidden layers.
        log_std_min: lower clamp of the log standard deviation.
        log_std_max: upper clamp of the log standard deviation.
    """

    __constants__ = ("log_std_max", "log_std_min")

    def __init__(self, state_dim: int = 28, action_dim: int = 8, hidden: int = 256,
                 log_std_min: float = -20.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.body = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, action_dim)
        self.log_std = nn.Linear(hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log-std of the action distribution (pre-tanh)."""
        hidden = self.body(obs)
        log_std = torch.clamp(self.log_std(hidden), self.log_std_min, self.log_std_max)
        return self.mean(hidden), log_std

    @torch.jit.export
    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The greedy action: ``tanh(mean)``, in [-1, 1]."""
        return torch.tanh(self.mean(self.body(obs)))
