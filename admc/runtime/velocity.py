"""The interface every runner of a *source* model (the user's ONNX file or PyTorch program) implements.

Requires: a subclass that sets ``source`` (how errors name the model) and ``signature`` (the model's inputs, or
None when only x and t are known) and implements ``_evaluate`` on contiguous float64 arrays.
Guarantees: ``velocity(x, t[, conditions])`` takes x [B, d] and t [B] (a scalar is broadcast) and returns float64
[B, d]; a state of the wrong rank or width, or a result of another shape, is an ``AdmcError`` naming the source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from admc.core.errors import AdmcError
from admc.frontends.signature import Signature


class Velocity(ABC):
    """A float64 velocity function f(x, t) of a source model; subclasses implement ``_evaluate``."""

    source: str
    signature: Signature | None

    def __call__(self, x: np.ndarray, t: np.ndarray | float,
                 conditions: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """``conditions``: per-sample condition inputs ``name → [B, ...]`` for conditional models."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise AdmcError(f"{self.source}: state must be [B, d], got shape {x.shape}")
        if self.signature is not None and x.shape[1] != self.signature.state_dimension:
            raise AdmcError(
                f"{self.source}: state has {x.shape[1]} features, the model's input "
                f"'{self.signature.state_input}' has {self.signature.state_dimension}"
            )
        # Own, writable, contiguous copies: runners may hand them to torch without copying.
        t = np.array(np.broadcast_to(np.asarray(t, dtype=np.float64).reshape(-1), (x.shape[0],)))
        result = np.asarray(self._evaluate(np.array(x), t, conditions or {}))
        if result.shape != x.shape:
            raise AdmcError(
                f"{self.source}: the model returned shape {result.shape} for a state of shape {x.shape}; "
                "a velocity must have the state's shape"
            )
        return result.astype(np.float64, copy=False)

    @abstractmethod
    def _evaluate(self, x: np.ndarray, t: np.ndarray, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """The model on contiguous float64 x [B, d], t [B] and each condition input it declares."""
