"""The α problem of one closed phase: linearisations of the relaxed loop and the convex program that picks α.

The relaxed loop z ← α⊙z + (1−α)⊙(A σ(z) + v) has, at a state z, the Jacobian
M(u) = I − diag(u)(I − J) with u = 1 − α and J = A diag(σ'(z)) (``loop_jacobian``). M is affine in u, so
for any direction x the ratio ‖M(u) x‖ / ‖x‖ = ‖x − u ⊙ (I − J) x‖ / ‖x‖ is a convex function of u, and for an
eigenvector x of J with eigenvalue λ it equals the modal factor |1 − u(1 − λ)| exactly: the cancellation
between x and Jx that makes a mode with Re λ < 0 contract under damping happens inside one norm.
The convex program (docs/alpha-selection.md):

    minimise    t + w · mean_i g(u_i)
    subject to  ‖x_m − u ⊙ (I − J_k) x_m‖₂ ≤ t ‖x_m‖₂   for every probe direction x_m at every linearisation k
                1 − α_max ≤ u_i ≤ min(1 − α_min, β_max / m_i)

with g the target's noise gain and the probes the dominant eigenvectors of J_k, refined by cutting planes
(the dominant eigenvectors of M(u) at the current solution). Everything is vectorised over channels; the
only loops are over a handful of rounds and linearisations.

Requires: sparse loop matrices and σ' samples (``loop_jacobian``). Guarantees: ``spectral_radius`` is the
largest |eigenvalue| of M(u) (dense below ``DENSE_LIMIT`` channels, ARPACK above), the figure every α
choice is judged by; ``solve_channelwise`` / ``solve_global`` return u within the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg

# Below this many channels eigenvalues are computed densely (exact, all modes); above, by ARPACK.
DENSE_LIMIT = 600
# A dense eigenproblem of this size takes about a second: the fallback when ARPACK does not converge.
ARPACK_FALLBACK_DENSE_LIMIT = 3000
MODES_PER_LINEARISATION = 8
CUTTING_PLANE_ROUNDS = 2
GRID_POINTS = 801
WORST_LINEARISATIONS = 4


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


def noise_gain(u: np.ndarray | cp.Expression, model: str):
    """Steady-state variance gain of white noise at a channel relaxed with α = 1 − u (docs/design.md §4).

    ``after_skip``: noise added after the skip, gain 1/(1 − α²) = 1/(u(2 − u)); ``optical``: noise through
    the optical path (scaled by β ∝ u), gain (1 − α)/(1 + α) = u/(2 − u) = 2/(2 − u) − 1. Both convex in u.
    """
    if isinstance(u, cp.Expression):
        if model == "after_skip":
            return cp.inv_pos(2 * u - cp.square(u))
        return 2 * cp.inv_pos(2 - u) - 1
    u = np.asarray(u, dtype=float)
    return 1.0 / (u * (2.0 - u)) if model == "after_skip" else u / (2.0 - u)


def _probes(jacobian: sparse.csr_matrix, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directions x (unit norm) and (I − J) x, both [m, n] complex; a conjugate pair gives one probe."""
    keep = np.ones(len(vectors), dtype=bool)
    for index in range(1, len(vectors)):
        if np.allclose(vectors[index], np.conj(vectors[index - 1])) and np.any(vectors[index].imag):
            keep[index] = False
    vectors = vectors[keep]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    directions = vectors / np.where(norms > 0, norms, 1.0)
    images = directions - (jacobian @ directions.T).T
    return directions, images


def _solve_probes(directions: np.ndarray, images: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  noise_weight: float, noise_model: str) -> np.ndarray:
    size = lower.size
    u = cp.Variable(size)
    bound = cp.Variable()
    real = directions.real - cp.multiply(images.real, u[None, :])
    imaginary = directions.imag - cp.multiply(images.imag, u[None, :])
    constraints = [cp.norm(cp.hstack([real, imaginary]), 2, axis=1) <= bound, u >= lower, u <= upper]
    objective = bound
    if noise_weight > 0:
        objective = objective + noise_weight * cp.sum(noise_gain(u, noise_model)) / size
    problem = cp.Problem(cp.Minimize(objective), constraints)
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.SolverError:
        problem.solve(solver=cp.SCS, eps=1e-7)
    if u.value is None:
        return upper.copy()
    return np.clip(np.asarray(u.value, dtype=float), lower, upper)


def solve_channelwise(linearisations: list[Linearisation], lower: np.ndarray, upper: np.ndarray,
                      noise_weight: float = 0.0, noise_model: str = "after_skip",
                      start: np.ndarray | None = None) -> np.ndarray:
    """u per channel minimising the largest probe ratio over the linearisations (cutting-plane rounds).

    Only the ``WORST_LINEARISATIONS`` slowest at ``start`` enter the program (the others contract faster).
    """
    jacobians = [jacobian for linearisation in linearisations for jacobian in linearisation.jacobians()]
    if start is not None and len(jacobians) > WORST_LINEARISATIONS:
        radii = [spectral_radius(jacobian, start) for jacobian in jacobians]
        jacobians = [jacobians[index] for index in np.argsort(radii)[::-1][:WORST_LINEARISATIONS]]
    directions, images = [], []
    for jacobian in jacobians:
        _, vectors = dominant_modes(jacobian, MODES_PER_LINEARISATION)
        found = _probes(jacobian, vectors)
        directions.append(found[0])
        images.append(found[1])
    u = upper.copy() if start is None else np.clip(start, lower, upper)
    for round_index in range(CUTTING_PLANE_ROUNDS):
        u = _solve_probes(np.concatenate(directions), np.concatenate(images), lower, upper, noise_weight,
                          noise_model)
        if round_index == CUTTING_PLANE_ROUNDS - 1:
            break
        for jacobian in jacobians:
            _, vectors = dominant_modes(relaxed(jacobian, u), 2)
            found = _probes(jacobian, vectors)
            directions.append(found[0])
            images.append(found[1])
    return u


def solve_global(linearisations: list[Linearisation], lower: float, upper: float, noise_weight: float = 0.0,
                 noise_model: str = "after_skip") -> float:
    """One u for every channel: exact minimax of |1 − u(1 − λ)| over the linearisations' eigenvalues.

    With one u the eigenvectors of M(u) are those of J, so this is the exact spectral radius at each
    linearisation (a convex function of u, minimised on a fine grid; eigenvalues of largest modulus).
    """
    values = np.concatenate([dominant_modes(jacobian, MODES_PER_LINEARISATION * 4)[0]
                             for linearisation in linearisations for jacobian in linearisation.jacobians()]
                            + [np.zeros(1)])
    grid = np.linspace(lower, upper, GRID_POINTS)
    factors = np.max(np.abs(1.0 - grid[:, None] * (1.0 - values[None, :])), axis=1)
    if noise_weight > 0:
        factors = factors + noise_weight * noise_gain(grid, noise_model)
    return float(grid[int(np.argmin(factors))])
