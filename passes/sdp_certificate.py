"""Semidefinite contraction certificate of a relaxed loop: a diagonal weighted norm in which it contracts by ρ.

Requires: the loop matrix A [n, n] (sparse) of a closed phase, its α [n], the upper slope bounds s [n] and
optionally lower ones a [n] (σ is slope-restricted: σ' ∈ [a_j, s_j], a = 0 by default: the global sector;
a local certificate passes the bounds of σ' over a box of states). Guarantees: a returned ρ is certified by
weights p > 0 and multipliers λ ≥ 0 that were checked here, in numpy, independently of the solver that
proposed them: with F(ρ) = Eᵀ P E − diag(ρ² P, 0) + [[−Λ diag(a s), Λ diag(a + s) / 2], [Λ diag(a + s) / 2,
−Λ]], E = [diag(α), diag(1 − α) A], the dense λ_max(F(ρ)) is below −margin. Then for any
two states whose difference quotients of σ lie in [a, s] (any two states when a = 0, s = σ'max; two states
of a box over which σ' ∈ [a, s], the box being convex) and any x, t (they enter additively)
‖δz'‖_P ≤ ρ ‖δz‖_P (S-procedure on (δw_j − a_j δz_j)(s_j δz_j − δw_j) ≥ 0).

How ρ is found (the LMI is a generalised eigenvalue problem: quasi-convex in ρ):
- a proven lower end: ρ ≥ the spectral radius of diag(α) + diag(1 − α) A diag(σ') for any slopes in [a, s]
  (the certified norm contracts that linear loop too); slopes a and s are used (a = 0: ρ ≥ max α);
  when it is ≥ the upper end the search is skipped;
- no bisection: at the current ρ_k the barrier solver (``lmi_barrier``) minimises t subject to
  F_{ρ_k}(p, λ) ⪯ t diag(p_k, 0), Σ p = n; the exact smallest ρ those (p, λ) certify (a Schur complement,
  below) is ρ_{k+1} < ρ_k. This is Dinkelbach's iteration for fractional programs: it stops when ρ falls by
  less than ``SETTLED``, comes that close to the lower end, or the solver proves that no (p, λ) works at ρ_k.
- the smallest ρ certified by given (p, λ): with Q_ww = Aᵀ diag((1 − α)² p) A − Λ ≺ 0 (the w block of F,
  free of ρ) and Q_zw = diag(α (1 − α) p) A + diag(λ (a + s) / 2), F(ρ) ⪯ 0 iff
  ρ² ≥ λ_max(P^{-1/2} (diag(α² p − λ a s) + Q_zw (−Q_ww)⁻¹ Q_zwᵀ) P^{-1/2}).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as linalg
import scipy.sparse as sparse

from admc.passes.lmi_barrier import minimise_lmi_bound

ROUNDS = 8  # Dinkelbach rounds (each one barrier solve)
WARM = 4.0  # the next round starts at the barrier weight reached / WARM
SETTLED = 1e-3  # stop when ρ falls by less than this, or comes this close to the lower end
CHECK_MARGIN = 1e-10  # λ_max(F(ρ)) must be below −CHECK_MARGIN × max |F| for ρ to be claimed
CLAIM_STEPS = (1e-7, 1e-5, 1e-3)  # ρ claimed = exact value + this, the first that passes the dense check


@dataclass(frozen=True)
class SdpCertificate:
    rho: float  # certified: checked densely with ``weights`` and ``multipliers``
    weights: np.ndarray  # p, the diagonal of P
    multipliers: np.ndarray  # λ, the diagonal of Λ
    lower: float  # proven: no diagonal-P certificate (indeed no norm) gives less
    rounds: int


def _low(slope: np.ndarray, slope_low: np.ndarray | None) -> np.ndarray:
    return np.zeros_like(slope) if slope_low is None else slope_low


def lmi_matrix(loop: np.ndarray, alpha: np.ndarray, slope: np.ndarray, weights: np.ndarray,
               multipliers: np.ndarray, rho: float, slope_low: np.ndarray | None = None) -> np.ndarray:
    """F(ρ), dense 2n × 2n, written out term by term (the independent check's own assembly); ``weights`` is the
    diagonal of P [n] or a full P [n, n] (``sample_certificates``)."""
    size, low = alpha.size, _low(slope, slope_low)
    stacked = np.hstack([np.diag(alpha), (1.0 - alpha)[:, None] * loop])
    matrix = stacked.T @ (weights[:, None] * stacked if weights.ndim == 1 else weights @ stacked)
    matrix[:size, :size] -= rho * rho * (np.diag(weights) if weights.ndim == 1 else weights)
    index = np.arange(size)
    matrix[index, index] -= multipliers * low * slope
    matrix[index, size + index] += multipliers * (low + slope) / 2.0
    matrix[size + index, index] += multipliers * (low + slope) / 2.0
    matrix[size + index, size + index] -= multipliers
    return matrix


def certifies(loop: np.ndarray, alpha: np.ndarray, slope: np.ndarray, weights: np.ndarray,
              multipliers: np.ndarray, rho: float, slope_low: np.ndarray | None = None) -> bool:
    """The dense check: P ≻ 0, Λ ⪰ 0 and λ_max(F(ρ)) ≤ −margin × max |F|."""
    if not (np.all(weights > 0.0) and np.all(multipliers >= 0.0) and np.all(np.isfinite(weights))
            and np.all(np.isfinite(multipliers))):
        return False
    matrix = lmi_matrix(loop, alpha, slope, weights, multipliers, rho, slope_low)
    top = linalg.eigvalsh(matrix, subset_by_index=[matrix.shape[0] - 1] * 2, check_finite=False)[0]
    return bool(top <= -CHECK_MARGIN * np.max(np.abs(matrix)))


def exact_factor(loop: np.ndarray, alpha: np.ndarray, slope: np.ndarray, weights: np.ndarray,
                 multipliers: np.ndarray, slope_low: np.ndarray | None = None) -> float | None:
    """The smallest ρ with F(ρ) ⪯ 0 for these (p, λ) (Schur complement; not yet checked), None if none."""
    if np.any(weights <= 0.0) or np.any(multipliers < 0.0):
        return None
    hidden_block = (loop.T * ((1.0 - alpha) ** 2 * weights)) @ loop - np.diag(multipliers)
    low = _low(slope, slope_low)
    coupling = (alpha * (1.0 - alpha) * weights)[:, None] * loop + np.diag(multipliers * (low + slope) / 2.0)
    try:
        lower_factor = linalg.cholesky(-hidden_block, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return None
    solved = linalg.solve_triangular(lower_factor, coupling.T, lower=True, check_finite=False)
    reduced = np.diag(alpha ** 2 * weights - multipliers * low * slope) + solved.T @ solved
    scale = 1.0 / np.sqrt(weights)
    squared = linalg.eigvalsh(scale[:, None] * reduced * scale[None, :], check_finite=False)[-1]
    return float(np.sqrt(max(squared, 0.0)))


def smallest_certified(loop: np.ndarray, alpha: np.ndarray, slope: np.ndarray, weights: np.ndarray,
                       multipliers: np.ndarray, slope_low: np.ndarray | None = None) -> float | None:
    """The smallest ρ that (p, λ) certify, confirmed by ``certifies``; None when they certify none."""
    exact = exact_factor(loop, alpha, slope, weights, multipliers, slope_low)
    if exact is None:
        return None
    for step in CLAIM_STEPS:
        if certifies(loop, alpha, slope, weights, multipliers, exact + step, slope_low):
            return exact + step
    return None


def spectral_lower_bound(loop: np.ndarray, alpha: np.ndarray, slope: np.ndarray,
                         slope_low: np.ndarray | None = None) -> float:
    """max over slopes {a, s} of the spectral radius of diag(α) + diag(1 − α) A diag(slopes): ρ is never below
    (slopes a = 0 give max α)."""
    radii = [float(np.max(alpha, initial=0.0))] if slope_low is None or not np.any(slope_low) else []
    for slopes in [slope] + ([] if radii else [slope_low]):
        relaxed = np.diag(alpha) + (1.0 - alpha)[:, None] * loop * slopes[None, :]
        radii.append(float(np.max(np.abs(np.linalg.eigvals(relaxed)), initial=0.0)))
    return max(radii)


def lmi_terms(loop: sparse.csr_matrix, alpha: np.ndarray, slope: np.ndarray, slope_low: np.ndarray | None = None
              ) -> tuple[sparse.csc_matrix, np.ndarray]:
    """The LMI's rank-two terms: p_i with U = [e_i, ε_i], D = diag(1, −ρ²) (ρ² filled in later);
    λ_j with U = [ε_j, ω_j], D = [[−a_j s_j, (a_j + s_j) / 2], [(a_j + s_j) / 2, −1]] (ε: z half, ω: w half)."""
    low = _low(slope, slope_low)
    size = alpha.size
    index = np.arange(size)
    loop = sparse.coo_matrix(loop)
    # column 2i: e_i = [α_i ε_i; (1 − α_i) a_iᵀ]; column 2i + 1: ε_i; column 2(n + j): ε_j; 2(n + j) + 1: ω_j
    rows = np.concatenate([index, size + loop.col, index, index, size + index])
    columns = np.concatenate([2 * index, 2 * loop.row, 2 * index + 1, 2 * (size + index), 2 * (size + index) + 1])
    values = np.concatenate([alpha, (1.0 - alpha)[loop.row] * loop.data, np.ones(size), np.ones(size),
                             np.ones(size)])
    basis = sparse.csc_matrix((values, (rows, columns)), shape=(2 * size, 4 * size))
    cores = np.zeros((2 * size, 2, 2))
    cores[:size, 0, 0] = 1.0
    cores[size:, 0, 0] = -low * slope
    cores[size:, 0, 1] = cores[size:, 1, 0] = (low + slope) / 2.0
    cores[size:, 1, 1] = -1.0
    return basis, cores


def sdp_certificate(loop: sparse.csr_matrix, alpha: np.ndarray, slope: np.ndarray, upper: float = 1.0,
                    slope_low: np.ndarray | None = None) -> SdpCertificate | None:
    """The smallest ρ ≤ ``upper`` this search certifies (checked) for σ' ∈ [``slope_low`` (default 0),
    ``slope``], or None when it certifies none."""
    size = alpha.size
    # A channel with slope bound 0 (σ constant: read by no block, an unread activation, a ReLU off over a local
    # box) moves nothing: its column of A is zeroed, and it gets the sector [0, 1] so that its multiplier stays
    # bounded (with s_j = 0 the barrier would push λ_j to infinity). Same dynamics, so the check below
    # certifies the loop as it is.
    unread = slope <= 0.0
    loop = sparse.csr_matrix(sparse.csr_matrix(loop) @ sparse.diags((~unread).astype(float)))
    slope = np.where(unread, 1.0, slope)
    slope_low = None if slope_low is None else np.where(unread, 0.0, slope_low)
    dense = np.asarray(loop.todense())
    lower = spectral_lower_bound(dense, alpha, slope, slope_low)
    if lower >= upper:
        return None
    basis, cores = lmi_terms(loop, alpha, slope, slope_low)
    normalised = np.arange(2 * size) < size
    # λ = 1.1 λ_max(Aᵀ diag((1 − α)²) A): the w block of F is then negative definite, so x has a finite ρ.
    gram = dense.T @ (((1.0 - alpha) ** 2)[:, None] * dense)
    x = np.concatenate([np.ones(size), np.full(size, 1.1 * float(linalg.eigvalsh(gram)[-1]) + 1e-9)])
    exact = exact_factor(dense, alpha, slope, x[:size], x[size:], slope_low)
    if exact is None:
        return None
    rho, history, weight = min(upper, exact), [(exact, x)], None
    for _ in range(ROUNDS):
        cores[:size, 1, 1] = -rho * rho
        # Dinkelbach's denominator: F(x) ⪯ t diag(p_k, 0), so t is (to first order) the change of ρ².
        result = minimise_lmi_bound(basis, cores, x, normalised, np.concatenate([x[:size], np.zeros(size)]),
                                             weight=weight)
        if result is None:
            break
        x, weight = result.x, result.weight / WARM
        value = exact_factor(dense, alpha, slope, x[:size], x[size:], slope_low)
        if value is not None:
            history.append((value, x))
        if result.proven_positive or value is None or value > rho - SETTLED or value - lower < SETTLED:
            break
        rho = value
    for value, x in sorted(history, key=lambda item: item[0])[:3]:
        if value > upper:
            break
        certified = smallest_certified(dense, alpha, slope, x[:size], x[size:], slope_low)
        if certified is not None and certified <= upper:
            return SdpCertificate(certified, x[:size].copy(), x[size:].copy(), lower, len(history) - 1)
    return None
