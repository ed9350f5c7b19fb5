"""Symbolic values used while canonicalising: state-affine forms and time-only values.

A ``Form`` is a value that depends on the diffusion state: ``Σ_atoms M·atom + constant + Σ time terms``,
with a non-batch ``shape`` whose product is its feature count. An atom's own form holds an implicit
:class:`Identity`, so memory grows linearly in the weights with a layer's width (a dense identity is made,
within ``--max-memory``, only where an op needs one, e.g. a residual sum of an activation with itself).
Linear ops act on forms exactly (matrix products), so chains of linear layers, residual additions and
concatenations fold into the matrices.
A ``TimeValue`` depends on the time input only and is evaluated numerically on demand, with the graph IR's
own op semantics, at any set of time points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from admc.core.limits import require_memory
from admc.ir.adm import Atom, TimeTerm
from admc.ir.evaluate import evaluate_op
from admc.ir.graph import Op


@dataclass
class TimeValue:
    """A value computed from the time input alone; ``evaluate(times)`` returns [S, *shape]."""

    compute: Callable[[np.ndarray, dict], np.ndarray]
    shape: tuple[int, ...]

    def evaluate(self, times: np.ndarray, cache: dict | None = None) -> np.ndarray:
        cache = {} if cache is None else cache
        key = id(self)
        if key not in cache:
            cache[key] = self.compute(np.asarray(times, dtype=np.float64), cache)
        return cache[key]

    @staticmethod
    def time_input(shape: tuple[int, ...]) -> TimeValue:
        return TimeValue(lambda times, cache: times.reshape((-1, *shape)), shape)

    @staticmethod
    def from_op(op: Op, arguments: list) -> TimeValue:
        """Apply ``op`` to time values and constants; the result's shape is found by a trial evaluation."""

        def compute(times: np.ndarray, cache: dict) -> np.ndarray:
            values = [
                argument.evaluate(times, cache) if isinstance(argument, TimeValue) else argument
                for argument in arguments
            ]
            return evaluate_op(op, values)

        # Two time points, not one: an op that mixes the batch (transA on a [B, 1] time input) fails here,
        # at import, rather than later on the schedule's many time points.
        with np.errstate(all="ignore"):  # a NaN here (Sqrt of a negative) is refused, named, after tabulation
            trial = np.asarray(compute(np.zeros(2), {}))
        if trial.ndim == 0 or trial.shape[0] != 2:
            raise ValueError(f"the result of shape {trial.shape} does not keep the batch dimension")
        return TimeValue(compute, tuple(trial.shape[1:]))

    def as_columns(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function of [S] times giving [S, features] (the non-batch shape flattened)."""
        return lambda times: self.evaluate(times).reshape(len(times), -1)


class Identity:
    """The n × n identity of an atom's own form, kept implicit so a layer of width n costs O(n), not O(n²):
    ``matrix @ Identity(n)`` is ``matrix``; anything else asks for :func:`dense` (memory-checked)."""

    __array_ufunc__ = None  # numpy hands ``ndarray @ Identity`` to __rmatmul__ instead of converting

    def __init__(self, size: int):
        self.size = int(size)
        self.shape = (self.size, self.size)
        self.ndim = 2

    @property
    def T(self) -> Identity:  # noqa: N802 (numpy's name: a time term's evaluation reads ``matrix.T``)
        return self

    def __rmatmul__(self, matrix: np.ndarray) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.size:
            raise ValueError(f"matmul: a {matrix.shape} matrix cannot multiply {self.size} features")
        return matrix.copy()

    def rows(self, indices: np.ndarray) -> np.ndarray:
        selected = np.zeros((indices.size, self.size))
        selected[np.arange(indices.size), indices] = 1.0
        return selected


def dense(weights) -> np.ndarray:
    """A term's matrix as an array (an implicit identity materialised, within the memory limit)."""
    if isinstance(weights, Identity):
        require_memory(8.0 * weights.size * weights.size, f"a dense identity of {weights.size} channels")
        return np.eye(weights.size)
    return weights


@dataclass
class Form:
    terms: dict[Atom, np.ndarray]
    constant: np.ndarray
    time_terms: list[TimeTerm] = field(default_factory=list)
    shape: tuple[int, ...] = ()

    @property
    def features(self) -> int:
        return int(self.constant.shape[0])

    @staticmethod
    def of_atom(atom: Atom, size: int, shape: tuple[int, ...]) -> Form:
        return Form({atom: Identity(size)}, np.zeros(size), [], shape)

    def dense_terms(self) -> dict[Atom, np.ndarray]:
        """The terms as arrays (what an ``AdmNode`` holds)."""
        return {atom: dense(weights) for atom, weights in self.terms.items()}

    def is_exactly(self, atom: Atom) -> bool:
        """True when the form is the atom itself (identity matrix, no offset, no time terms)."""
        matrix = self.terms.get(atom)
        return (
            len(self.terms) == 1
            and matrix is not None
            and matrix.shape[0] == matrix.shape[1]
            and (isinstance(matrix, Identity) or np.array_equal(matrix, np.eye(matrix.shape[0])))
            and not np.any(self.constant)
            and not self.time_terms
        )

    def linear(self, matrix: np.ndarray) -> Form:
        """``matrix @ self`` for a [out, features] matrix."""
        return Form(
            {atom: matrix @ weights for atom, weights in self.terms.items()},
            matrix @ self.constant,
            [TimeTerm(matrix @ term.matrix, term.function, term.description) for term in self.time_terms],
            (matrix.shape[0],),
        )

    def scaled(self, factors: np.ndarray) -> Form:
        """Elementwise product with a constant broadcast over the features."""
        factors = np.broadcast_to(np.asarray(factors, dtype=np.float64).reshape(-1), (self.features,))
        # Row scaling instead of a dense diag(factors) product: memory linear in the form's weights.
        column = factors[:, None]
        return Form({atom: column * dense(weights) for atom, weights in self.terms.items()}, factors * self.constant,
                    [TimeTerm(column * dense(term.matrix), term.function, term.description)
                     for term in self.time_terms],
                    self.shape)

    def plus(self, other: Form) -> Form:
        terms = dict(self.terms)
        for atom, weights in other.terms.items():
            terms[atom] = dense(terms[atom]) + dense(weights) if atom in terms else weights
        return Form(terms, self.constant + other.constant, [*self.time_terms, *other.time_terms], self.shape)

    def plus_constant(self, constant: np.ndarray) -> Form:
        constant = np.broadcast_to(np.asarray(constant, dtype=np.float64).reshape(-1), (self.features,))
        return Form(dict(self.terms), self.constant + constant, list(self.time_terms), self.shape)

    def plus_time(self, value: TimeValue, description: str) -> Form:
        columns = int(np.prod(value.shape, dtype=np.int64)) if value.shape else 1
        # A per-feature time value enters through the identity, kept implicit: a dense one is n² (128 MB for a
        # layer of 4,096 features, most of canonicalisation's time at 36M weights, first touches of memory).
        matrix = Identity(self.features) if columns == self.features else np.ones((self.features, 1))
        term = TimeTerm(matrix, value.as_columns(), description)
        return Form(dict(self.terms), self.constant.copy(), [*self.time_terms, term], self.shape)

    def reshaped(self, shape: tuple[int, ...]) -> Form:
        return Form(self.terms, self.constant, self.time_terms, shape)

    def selected(self, indices: np.ndarray) -> Form:
        rows = np.asarray(indices, dtype=np.int64)  # row selection, without a dense selector matrix
        return Form({atom: weights.rows(rows) if isinstance(weights, Identity) else weights[rows]
                     for atom, weights in self.terms.items()}, self.constant[rows],
                    [TimeTerm(term.matrix.rows(rows) if isinstance(term.matrix, Identity) else term.matrix[rows],
                              term.function, term.description) for term in self.time_terms],
                    (rows.size,))

    @staticmethod
    def concatenated(parts: list[Form]) -> Form:
        sizes = [part.features for part in parts]
        offsets = np.cumsum([0, *sizes])
        total = int(offsets[-1])
        result = Form({}, np.zeros(total), [], (total,))
        for part, start in zip(parts, offsets[:-1], strict=True):
            result = result.plus(part.placed(start, total))
        result.shape = (total,)
        return result

    def placed(self, start: int, total: int) -> Form:
        """The form's features at rows [start, start + features) of a ``total``-feature form (zeros
        elsewhere), without a dense placement matrix."""

        def pad(matrix: np.ndarray) -> np.ndarray:
            matrix = dense(matrix)
            padded = np.zeros((total, *matrix.shape[1:]))
            padded[start:start + matrix.shape[0]] = matrix
            return padded

        return Form({atom: pad(weights) for atom, weights in self.terms.items()}, pad(self.constant),
                    [TimeTerm(pad(term.matrix), term.function, term.description) for term in self.time_terms],
                    (total,))
