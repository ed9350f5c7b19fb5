"""Small conditional models for the condition-interface and guidance tests (exported inside each test).

Each is called as ``module(x [B, d], t [B], condition)``; the condition is a class index (int64 [B], read
through an embedding table whose last row is the unconditional token), a dense vector [B, m], or a one-hot
vector concatenated with x and t at the first layer.
"""

from __future__ import annotations

import torch
from models import STATE_SIZE, seeded
from torch import nn

CLASSES = 4
CONDITION_FEATURES = 3


class EmbeddingClass(nn.Module):
    """Class index → embedding table (CLASSES + 1 rows; the last is the null token) → added to layer 1."""

    def __init__(self, hidden: int = 12, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.embedding = nn.Embedding(CLASSES + 1, hidden)
        self.first = nn.Linear(d, hidden)
        self.time = nn.Linear(1, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x) + self.time(t[:, None]) + self.embedding(label))
        return self.last(torch.tanh(self.second(h)))


class DenseCondition(nn.Module):
    """A dense condition vector through a small tanh MLP (time-modulated), added to the first hidden layer."""

    def __init__(self, hidden: int = 12, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.condition_in = nn.Linear(CONDITION_FEATURES + 1, 8)
        self.condition_out = nn.Linear(8, hidden)
        self.first = nn.Linear(d + 1, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        embedded = self.condition_out(torch.tanh(self.condition_in(torch.cat([cond, t[:, None]], dim=1))))
        h = torch.tanh(self.first(torch.cat([x, t[:, None]], dim=1)) + embedded)
        return self.last(torch.tanh(self.second(h)))


class ConcatFirstLayer(nn.Module):
    """``Linear(cat[x, t, c]) → tanh → Linear → tanh → Linear``: the condition enters with x and t."""

    def __init__(self, hidden: int = 12, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.first = nn.Linear(d + 1 + CLASSES, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_vector: torch.Tensor) -> torch.Tensor:
        h = self.first(torch.cat([x, t[:, None], class_vector], dim=1))
        return self.last(torch.tanh(self.second(torch.tanh(h))))


class ScaledByCondition(nn.Module):
    """Refused: the condition multiplies a state-dependent value (a condition-dependent weight)."""

    def __init__(self, hidden: int = 8, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.first = nn.Linear(d, hidden)
        self.gate = nn.Linear(CONDITION_FEATURES, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.first(x) * self.gate(cond) + t[:, None]))


def make(kind: str, seed: int = 0) -> nn.Module:
    modules = {"embedding": EmbeddingClass, "dense": DenseCondition, "concat": ConcatFirstLayer,
               "scaled": ScaledByCondition}
    return seeded(modules[kind](), seed)


def example_condition(kind: str, batch: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(99)
    if kind == "embedding":
        return torch.randint(0, CLASSES, (batch,), generator=generator)
    if kind == "concat":
        return torch.eye(CLASSES)[torch.randint(0, CLASSES, (batch,), generator=generator)]
    return torch.randn(batch, CONDITION_FEATURES, generator=generator)


INPUT_NAMES = {"embedding": ("x", "t", "label"), "dense": ("x", "t", "cond"), "concat": ("x", "t", "class_vector"),
               "scaled": ("x", "t", "cond")}
