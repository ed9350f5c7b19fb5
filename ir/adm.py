"""The canonical ADM form: the network as a DAG of affine nodes over activated sources.

Every node computes ``pre-activation = Σ_atoms W_atom · atom + bias + time_term(t)``, where an atom is a
source value under an activation: ``tanh(x)``, ``x`` itself (identity, only ever on the diffusion state)
or ``σ(node)`` of an earlier node, σ one of ``ACTIVATIONS`` (tanh, relu). Linear ops, residual additions
and glue are already folded into the matrices, so a hidden node is consumed through its one activation
(``AdmNode.activation``). The velocity is the ``output`` node.

Time terms are functions of the scalar time alone (``t·e``, sinusoidal embeddings and their MLPs); they are
evaluated at compile time at the schedule's time points and become per-step injected vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATE = "x"
TANH = "tanh"
RELU = "relu"
IDENTITY = "identity"
# The nonlinearities a hidden node can be read through; which of them a target computes is its declaration.
ACTIVATIONS = (TANH, RELU)


def activate(activation: str, value):
    """σ(value) for an activation name; works on numpy arrays and torch tensors alike."""
    if activation == TANH:
        return value.tanh() if hasattr(value, "tanh") else np.tanh(value)
    if activation == RELU:
        return value.clamp(min=0) if hasattr(value, "clamp") else np.maximum(value, 0.0)
    return value


@dataclass(frozen=True, order=True)
class Atom:
    """A source value under an activation: ``(source, activation)``; ``source`` is ``"x"`` or a node name."""

    source: str
    activation: str

    def apply(self, value: np.ndarray) -> np.ndarray:
        return activate(self.activation, value)


@dataclass(frozen=True)
class TimeTerm:
    """``matrix @ function(t)``: a time-only vector entering a node. ``function`` maps [S] times to [S, m]."""

    matrix: np.ndarray
    function: Callable[[np.ndarray], np.ndarray]
    description: str = ""

    def evaluate(self, times: np.ndarray) -> np.ndarray:
        return self.function(np.asarray(times, dtype=np.float64)) @ self.matrix.T


@dataclass
class AdmNode:
    name: str
    size: int
    terms: dict[Atom, np.ndarray]
    bias: np.ndarray
    time_terms: list[TimeTerm] = field(default_factory=list)
    # How consumers read this node (tanh or relu); the output node is read by nobody.
    activation: str = TANH

    def time_vector(self, times: np.ndarray) -> np.ndarray:
        """The node's time terms at the given times, [S, size] (zeros without time terms)."""
        total = np.zeros((len(times), self.size))
        for term in self.time_terms:
            total = total + term.evaluate(times)
        return total

    def pre_activation(self, values: dict[str, np.ndarray], times: np.ndarray) -> np.ndarray:
        total = self.bias + self.time_vector(times)
        for atom, matrix in sorted(self.terms.items()):
            total = total + atom.apply(values[atom.source]) @ matrix.T
        return total


@dataclass
class AdmNetwork:
    """A canonical network: ``velocity(x, t) = output(...)`` over hidden ``nodes`` in topological order."""

    state_dimension: int
    nodes: list[AdmNode]
    output: AdmNode
    source: str
    # Atoms ``condition:k`` read by nodes: per-sample values of the conditions (and t), see ir/condition.py.
    conditions: dict[str, Any] = field(default_factory=dict)

    def state_activations(self) -> set[str]:
        """The activations under which the diffusion state is read (``tanh`` and/or ``identity``)."""
        return {atom.activation for node in [*self.nodes, self.output] for atom in node.terms
                if atom.source == STATE}

    def velocity(self, state: np.ndarray, times: np.ndarray,
                 conditions: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Evaluate f(x, t[, c]) directly on the DAG (float64), one time (and condition) per sample."""
        state = np.asarray(state, dtype=np.float64)
        times = np.broadcast_to(np.asarray(times, dtype=np.float64).reshape(-1), (state.shape[0],))
        values = {STATE: state}
        if self.conditions:
            from admc.ir.condition import ConditionContext

            context, cache = ConditionContext(np.array(times), dict(conditions or {})), {}
            values.update({name: value.columns(context, cache) for name, value in self.conditions.items()})
        for node in self.nodes:
            values[node.name] = node.pre_activation(values, times)
        return self.output.pre_activation(values, times)

    def weight_count(self) -> int:
        return sum(matrix.size for node in [*self.nodes, self.output] for matrix in node.terms.values())
