"""The canonical ADM form: the network as a DAG of affine nodes over activated sources.

Every node computes ``pre-activation = Σ_atoms W_atom · atom + bias + time_term(t)``, where an atom is a
source value under an activation: ``tanh(x)``, ``x`` itself (identity, only ever on the diffusion state)
or ``σ(node)`` of an earlier node, σ one of ``ACTIVATIONS`` (tanh, relu) or an algebraic sigmoid
u / (1 + |u|^c)^(1/c) named with its exponent (``algebraic_sigmoid(c)``: the σ an analog machine drives its
LEDs with, for models trained with it). Linear ops, residual additions
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
# u / (1 + |u|^c)^e with e = 1/c: one activation per exponent, named "algebraic_sigmoid:<c>" (``algebraic_sigmoid``);
# a model exported in float32 rounds c and 1/c apart, so its name carries e too ("algebraic_sigmoid:<c>:<e>").
ALGEBRAIC_SIGMOID = "algebraic_sigmoid"
_SEPARATOR = ":"
# Two algebraic sigmoids whose exponents agree to this (relative) are the same σ for a machine (float32: 6e-8).
SAME_SIGMOID = 1e-6
# What a digital target computes: every activation, the algebraic sigmoid for any exponent (``accepts``).
EVERY_ACTIVATION = (TANH, RELU, ALGEBRAIC_SIGMOID)


def algebraic_sigmoid(exponent: float, outer: float | None = None) -> str:
    """The activation name of u / (1 + |u|^c)^e, c = ``exponent``, e = ``outer`` (None: exactly 1/c). The
    exponents are written exactly, so the network computes what the source does to the last bit."""
    exponent = float(exponent)
    outer = (1.0 / exponent if exponent > 0 else 0.0) if outer is None else float(outer)
    if not (np.isfinite(exponent) and exponent > 0 and np.isfinite(outer) and outer > 0):
        raise ValueError(f"an algebraic sigmoid needs positive exponents, got c = {exponent}, e = {outer}")
    if abs(outer * exponent - 1.0) > SAME_SIGMOID:
        raise ValueError(f"not an algebraic sigmoid: the outer exponent {outer} is not 1/c for c = {exponent}")
    name = f"{ALGEBRAIC_SIGMOID}{_SEPARATOR}{exponent!r}"
    return name if outer == 1.0 / exponent else f"{name}{_SEPARATOR}{outer!r}"


def sigmoid_exponents(activation: str) -> tuple[float, float] | None:
    """(c, e) of an algebraic sigmoid's name, None for any other name."""
    kind, *values = activation.split(_SEPARATOR)
    if kind != ALGEBRAIC_SIGMOID or len(values) not in (1, 2):
        return None
    try:
        exponent = float(values[0])
        return exponent, (1.0 / exponent if len(values) == 1 else float(values[1]))
    except (ValueError, ZeroDivisionError):
        return None


def sigmoid_exponent(activation: str) -> float | None:
    """c of an algebraic sigmoid's name, None for any other name."""
    exponents = sigmoid_exponents(activation)
    return None if exponents is None else exponents[0]


def is_activation(activation: str) -> bool:
    """A nonlinearity of the IR (not identity or "none")."""
    return activation in ACTIVATIONS or sigmoid_exponents(activation) is not None


def same_sigmoid(first: str, second: str) -> bool:
    """Two algebraic sigmoids whose exponents agree to ``SAME_SIGMOID`` (a float32 export and a description)."""
    a, b = sigmoid_exponents(first), sigmoid_exponents(second)
    if a is None or b is None:
        return False
    return all(abs(x - y) <= SAME_SIGMOID * abs(y) for x, y in zip(a, b, strict=True))


def accepts(available: tuple[str, ...], activation: str) -> bool:
    """Whether a target declaring ``available`` computes ``activation``: by name, an algebraic sigmoid whose
    exponents agree with a declared one, or any algebraic sigmoid when ``algebraic_sigmoid`` itself is declared
    (a digital target)."""
    if activation in available:
        return True
    if sigmoid_exponents(activation) is None:
        return False
    return ALGEBRAIC_SIGMOID in available or any(same_sigmoid(activation, entry) for entry in available)


def activate(activation: str, value):
    """σ(value) for an activation name; works on numpy arrays and torch tensors alike."""
    if activation == TANH:
        return value.tanh() if hasattr(value, "tanh") else np.tanh(value)
    if activation == RELU:
        return value.clamp(min=0) if hasattr(value, "clamp") else np.maximum(value, 0.0)
    exponents = sigmoid_exponents(activation)
    if exponents is not None:
        return value / (1.0 + abs(value) ** exponents[0]) ** exponents[1]
    return value


def activation_slope(activation: str, value: np.ndarray) -> np.ndarray:
    """σ'(value) (numpy): 1 − tanh², the step of relu, (1 + |u|^c)^(−e−1) (1 + (1 − e c) |u|^c) for the
    algebraic sigmoid (≤ 1, = 1 at 0 when e c = 1), else 1."""
    if activation == TANH:
        return 1.0 - np.tanh(value) ** 2
    if activation == RELU:
        return (value > 0.0).astype(np.float64)
    exponents = sigmoid_exponents(activation)
    if exponents is not None:
        power = np.abs(value) ** exponents[0]
        return (1.0 + power) ** (-exponents[1] - 1.0) * (1.0 + (1.0 - exponents[1] * exponents[0]) * power)
    return np.ones_like(value, dtype=np.float64)


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
            from admc.ir.condition import ConditionContext  # here: ir.condition → ir.evaluate → this module

            context, cache = ConditionContext(np.array(times), dict(conditions or {})), {}
            values.update({name: value.columns(context, cache) for name, value in self.conditions.items()})
        for node in self.nodes:
            values[node.name] = node.pre_activation(values, times)
        return self.output.pre_activation(values, times)

    def weight_count(self) -> int:
        return sum(matrix.size for node in [*self.nodes, self.output] for matrix in node.terms.values())
