"""The α problem of one closed phase: linearisations of the relaxed loop and their spectra.

The relaxed loop z ← α⊙z + (1−α)⊙(A σ(z) + v) has, at a state z, the Jacobian
M(u) = I − diag(u)(I − J) with u = 1 − α and J = A diag(σ'(z)) (``loop_jacobian``). Its spectral radius is the
loop's asymptotic contraction factor near that state. With one u for every channel the eigenvectors of M are
those of J and each eigenvalue λ of J becomes 1 − u(1 − λ): ``solve_global`` is then exact. The channel-wise
choice is ``alpha_channelwise``'s (a sequence of cone programs).

Requires: sparse loop matrices and σ' samples (``loop_jacobian``). Guarantees: ``spectral_radius`` is the
largest |eigenvalue| of M(u) (dense below ``DENSE_LIMIT`` channels, ARPACK above); ``solve_global`` returns a
u within the bounds; ``noise_gain`` is convex in u (the cone program writes it as cones: ``alpha_step_program``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg

# Below this many channels eigenvalues are computed densely (exact, all modes); above, by ARPACK.
DENSE_LIMIT = 600
# A dense eigenproblem of this size takes about a second: the fallback when ARPACK does not converge.
ARPACK_FALLBACK_DENSE_LIMIT = 3000
MODES_PER_LINEARISATION = 8
GRID_POINTS = 801
# Below this many eigenvalues the grid over all of them is cheaper than finding their hull (2,113 eigenvalues on
# two moons aoc-48: 48 ms over all of them, 7 ms over the hull's 14 vertices).
HULL_FROM = 256


@dataclass
class Linearisation:
    """The loop's linear part of one phase and σ' at the states it is linearised at.

    ``matrix`` may be a zero-argument function building it: on a block cycle the α pass never needs it.
    """

    source: sparse.csr_matrix | Callable[[], sparse.csr_matrix]  # A_phase [n, n], or how to build it
    slopes: np.ndarray  # [K, n]

    @property
    def matrix(self) -> sparse.csr_matrix:
        if callable(self.source):
            self.source = self.source()
        return self.source

    def jacobians(self) -> list[sparse.csr_matrix]:
        return [sparse.csr_matrix(self.matrix.multiply(slope[None, :])) for slope in self.slopes]


def relaxed(jacobian: sparse.csr_matrix, u: np.ndarray) -> sparse.csr_matrix:
    """M(u) = I − diag(u) + diag(u) J (sparse)."""
    size = jacobian.shape[0]
    return sparse.csr_matrix(sparse.diags(1.0 - u) + sparse.diags(u) @ jacobian) if size else jacobian


def dominant_modes(matrix: sparse.csr_matrix, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors [count, n] of largest modulus (complex)."""
    size = matrix.shape[0]
    if size <= DENSE_LIMIT:
        values, vectors = np.linalg.eig(matrix.toarray())
        order = np.argsort(-np.abs(values))[:count]
        return values[order], vectors[:, order].T
    count = min(count, size - 2)
    try:
        values, vectors = sparse_linalg.eigs(matrix, k=count, which="LM", tol=1e-6, maxiter=5000,
                                             v0=np.ones(size) / np.sqrt(size))
    except sparse_linalg.ArpackNoConvergence as error:
        # Clustered dominant eigenvalues (e.g. many channels at the same relaxation) can stall ARPACK: keep
        # what converged, else solve densely where that is affordable, else retry with a wider Krylov space.
        if len(error.eigenvalues) > 0:
            return error.eigenvalues, error.eigenvectors.T
        if size <= ARPACK_FALLBACK_DENSE_LIMIT:
            values, vectors = np.linalg.eig(matrix.toarray())
            order = np.argsort(-np.abs(values))[:count]
            return values[order], vectors[:, order].T
        values, vectors = sparse_linalg.eigs(matrix, k=count, which="LM", tol=1e-4, maxiter=20_000,
                                             ncv=min(size - 1, max(4 * count + 1, 64)),
                                             v0=np.ones(size) / np.sqrt(size))
    return values, vectors.T


def spectral_radius(jacobian: sparse.csr_matrix, u: np.ndarray) -> float:
    """Largest |eigenvalue| of the relaxed loop's Jacobian M(u): its asymptotic contraction factor."""
    matrix = relaxed(jacobian, np.broadcast_to(u, (jacobian.shape[0],)).astype(float))
    if matrix.shape[0] <= DENSE_LIMIT:
        return float(np.max(np.abs(np.linalg.eigvals(matrix.toarray())), initial=0.0))
    values, _ = dominant_modes(matrix, 1)
    return float(np.max(np.abs(values), initial=0.0))


def noise_gain(u, model: str):
    """Steady-state variance gain of white noise at a channel relaxed with α = 1 − u (docs/design.md §4).

    ``after_skip``: noise added after the skip, gain 1/(1 − α²) = 1/(u(2 − u)); ``optical``: noise through
    the optical path (scaled by β ∝ u), gain (1 − α)/(1 + α) = u/(2 − u) = 2/(2 − u) − 1. Both convex in u.
    """
    u = np.asarray(u, dtype=float)
    return 1.0 / (u * (2.0 - u)) if model == "after_skip" else u / (2.0 - u)


def extreme_points(values: np.ndarray) -> np.ndarray:
    """The values on the convex hull of ``values`` in the complex plane (all of them when the hull is degenerate).

    For any u, max over λ of |1 − u(1 − λ)| is the largest distance from 1/u to the points 1 − λ (times u), a
    convex function of λ: its maximum over the hull is at a vertex, so the vertices give the same maximum.
    """
    if values.size <= HULL_FROM:
        return values
    return values[hull_vertices(values.real, values.imag)]


def hull_vertices(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the convex hull's vertices of the points (x, y), by Andrew's monotone chain: no
    collinear point is kept, so a flat set gives its two ends (scipy's Qhull cost a 0.23 s import per build)."""
    order = np.lexsort((y, x))
    xs, ys = x[order].tolist(), y[order].tolist()

    def chain(indices) -> list[int]:
        kept: list[int] = []
        for index in indices:
            while len(kept) >= 2:
                first, second = kept[-2], kept[-1]
                cross = ((xs[second] - xs[first]) * (ys[index] - ys[first])
                         - (ys[second] - ys[first]) * (xs[index] - xs[first]))
                if cross > 0.0:
                    break
                kept.pop()
            kept.append(index)
        return kept

    lower, upper = chain(range(len(xs))), chain(reversed(range(len(xs))))
    return np.unique(order[np.array(lower[:-1] + upper[:-1] or [0], dtype=np.int64)])


def solve_global(linearisations: list[Linearisation], lower: float, upper: float, noise_weight: float = 0.0,
                 noise_model: str = "after_skip", eigenvalues: np.ndarray | None = None) -> float:
    """One u for every channel: exact minimax of |1 − u(1 − λ)| over the linearisations' eigenvalues
    (``eigenvalues`` if given: every eigenvalue of every dense Jacobian).

    With one u the eigenvectors of M(u) are those of J, so this is the exact spectral radius at each
    linearisation (a convex function of u, minimised on a fine grid; eigenvalues of largest modulus above
    ``DENSE_LIMIT`` channels, every eigenvalue below).
    """
    if eigenvalues is None:
        eigenvalues = np.concatenate(
            [np.linalg.eigvals(jacobian.toarray()) if jacobian.shape[0] <= DENSE_LIMIT
             else dominant_modes(jacobian, MODES_PER_LINEARISATION * 4)[0]
             for linearisation in linearisations for jacobian in linearisation.jacobians()])
    values = extreme_points(np.concatenate([np.asarray(eigenvalues).reshape(-1), np.zeros(1)]))
    grid = np.linspace(lower, upper, GRID_POINTS)
    factors = np.max(np.abs(1.0 - grid[:, None] * (1.0 - values[None, :])), axis=1)
    if noise_weight > 0:
        factors = factors + noise_weight * noise_gain(grid, noise_model)
    return float(grid[int(np.argmin(factors))])
