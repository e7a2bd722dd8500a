"""Small modules the rlobs.torch tests compile: well-behaved, unscriptable, deceptive."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Unscriptable(nn.Module):
    """Fine in eager; TorchScript cannot compile ``**kwargs`` in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self.linear(x)


class FailsWhenScripted(nn.Module):
    """Scripts fine, but the scripted ``forward`` raises on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            raise RuntimeError("only the scripted module fails")
        return self.linear(x)


class DiffersWhenScripted(nn.Module):
    """Scripts and runs, but the scripted outputs differ from eager's."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if torch.jit.is_scripting():
            out = out + 1.0
        return out


class Small(nn.Module):
    """A two-layer MLP with an exported ``greedy`` method."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.jit.export
    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))

    def not_exported(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 2.0
