"""Channel-wise α by sequential convex programming: one second-order cone program (Clarabel) per step.

The relaxed loop's Jacobian at a linearisation J is M(u) = I − diag(u)(I − J), u = 1 − α per channel. Its
spectral radius ρ(M(u)) — the loop's asymptotic contraction factor — is not a convex function of u, so no
single convex program gives the best channel-wise α. What is convex is its first-order model: each dominant
eigenvalue μ_j(u + d) ≈ μ_j + g_jᵀ d with g_j,i = −y_j,i ((I − J) x_j)_i (x_j, y_j the right and left
eigenvectors, y_jᵀ x_j = 1), so

    minimise    s + w · mean_i g_noise(u_i + d_i)
    subject to  |μ_kj + g_kjᵀ d| ≤ s       for the dominant eigenvalues j of every linearisation k
                max(lower − u, −Δ) ≤ d ≤ min(upper − u, Δ)

is a second-order cone program in the step d (the target's range constraints are the bounds, so every
iterate is a program the target can run). A step is kept only when the exact worst spectral radius (dense
eigenvalues) falls; the trust radius Δ grows after a kept step and halves after a refused one. Every kept
iterate is therefore within the target's limits and strictly better than the start, and the result is never
worse than the start (in the exact figure, not the model).

Requires: dense Jacobians [n, n] (``DENSE_LIMIT`` channels at most: above it the caller skips this search),
per-channel bounds and a start within them. The cone program is ``alpha_step_program.solve_step`` (Clarabel
directly: cvxpy's import alone took longer than the whole search).
Guarantees: ``descend`` returns u within [lower, upper] with ``worst_radius(u) ≤ worst_radius(start)`` and the
number of programs solved.
"""

from __future__ import annotations

import numpy as np

from admc.passes.alpha_step_program import solve_step

# Dense eigenproblems per step: above this many channels the search is skipped (the caller says so).
DENSE_LIMIT = 400
DOMINANT_EIGENVALUES = 6
MAX_STEPS = 8
INITIAL_TRUST = 0.2
SMALLEST_TRUST = 1e-3


def relaxed(jacobian: np.ndarray, u: np.ndarray) -> np.ndarray:
    """M(u) = I − diag(u)(I − J), dense."""
    return np.eye(u.size) - u[:, None] * (np.eye(u.size) - jacobian)


class RadiusMemo:
    """ρ(M(u)) per linearisation, each computed once per distinct u: the candidates' radii, the ordering of a
    descent's linearisations and the descent itself ask for the same ones (on a two-moons build, 379 of the
    769 dense eigenproblems were repeats). Keyed by the Jacobian's identity, which the memo keeps alive."""

    def __init__(self) -> None:
        self._radii: dict[tuple[int, bytes], float] = {}
        self._jacobians: dict[int, np.ndarray] = {}

    def radius(self, jacobian: np.ndarray, u: np.ndarray) -> float:
        key = (id(jacobian), np.asarray(u, dtype=float).tobytes())
        if key not in self._radii:
            self._jacobians[id(jacobian)] = jacobian
            self._radii[key] = float(np.max(np.abs(np.linalg.eigvals(relaxed(jacobian, u))), initial=0.0))
        return self._radii[key]


def worst_radius(jacobians: list[np.ndarray], u: np.ndarray, memo: RadiusMemo | None = None) -> float:
    """The largest spectral radius of M(u) over the linearisations (``memo``: radii already computed)."""
    memo = memo or RadiusMemo()
    return max((memo.radius(jacobian, u) for jacobian in jacobians), default=0.0)


def eigenvalue_gradients(jacobian: np.ndarray, u: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` eigenvalues of M(u) of largest modulus and their gradients in u, [count] and [count, n]."""
    values, right = np.linalg.eig(relaxed(jacobian, u))
    order = np.argsort(-np.abs(values))[:count]
    try:
        left = np.linalg.inv(right)
    except np.linalg.LinAlgError:  # a defective M: the pseudo-inverse gives bounded (if inexact) gradients
        left = np.linalg.pinv(right)
    images = (np.eye(u.size) - jacobian) @ right[:, order]
    return values[order], -(left[order, :] * images.T)


def descend(jacobians: list[np.ndarray], lower: np.ndarray, upper: np.ndarray, start: np.ndarray,
            noise_weight: float = 0.0, noise_model: str = "after_skip", max_steps: int = MAX_STEPS,
            memo: RadiusMemo | None = None) -> tuple[np.ndarray, int]:
    """Channel-wise u from ``start`` by trust-region steps of the cone program; (u, programs solved)."""
    from admc.passes.alpha_problem import noise_gain

    memo = memo or RadiusMemo()

    def objective(u: np.ndarray) -> float:
        penalty = noise_weight * float(np.mean(noise_gain(u, noise_model))) if noise_weight > 0 else 0.0
        return worst_radius(jacobians, u, memo) + penalty

    u = np.clip(np.asarray(start, dtype=float), lower, upper)
    if not jacobians or np.all(upper <= lower):
        return u, 0
    count = min(DOMINANT_EIGENVALUES, u.size)
    best, trust, solved, model_at = objective(u), INITIAL_TRUST, 0, None
    for _ in range(max_steps):
        if model_at is not u:  # a refused step keeps u, and with it the same eigenvalues and gradients
            pairs = [eigenvalue_gradients(jacobian, u, count) for jacobian in jacobians]
            values, gradients, model_at = np.concatenate([value for value, _ in pairs]), np.vstack(
                [gradient for _, gradient in pairs]), u
        if not np.all(np.isfinite(gradients)):
            break
        step = solve_step(values, gradients,
                          np.maximum(lower - u, -trust), np.minimum(upper - u, trust), u, noise_weight, noise_model)
        solved += 1
        if step is None:
            break
        candidate = np.clip(u + step, lower, upper)
        value = objective(candidate)
        if value < best - 1e-9:
            best, u, trust = value, candidate, min(2.0 * trust, 1.0)
        else:
            trust /= 2.0
            if trust < SMALLEST_TRUST:
                break
    return u, solved
