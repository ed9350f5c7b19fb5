"""Full-P local certificates: contraction of a closed loop over one sample's box, in a full weighted norm.

Requires: the loop matrix A [n, n] of a closed phase, its α [n] and a slope sector [a, b] per channel (σ' over a
box of states: ``local_certificates.slope_sector``). Guarantees: a returned ρ is certified by a symmetric P and
multipliers λ ≥ 0 checked here densely, independently of how they were found: P and −F(ρ) − margin × max|F| × I
have Cholesky factors, F(ρ) the 2n × 2n LMI matrix in midpoint form (``lmi_midpoint``: the S-procedure LMI of
``sdp_certificate`` with a full P, under the congruence w = c z + r p). Then for any two states of the box and
any drive ‖F(z) − F(z')‖_P ≤ ρ ‖z − z'‖_P. ``boxes_certificate`` gives one ρ for a list of boxes, each with its
own checked (P, λ).

Why a full P, per sample: on two moons (T = 4) the block cycle is too non-normal for a diagonal P (it
certifies 1.28 where ρ(J) ≤ 0.83), and one box over all samples is too wide for any norm: slopes that each
channel takes somewhere in it, put together, give loop matrices of spectral radius 1.10 (aoc-48) and 1.20
(ideal), below which no certificate over that box can go. On each sample's own box: at most 0.96 and 1.006.

How (P, λ) are found, without an SDP solver (n² / 2 variables: 414 s through cvxpy at 66 channels): write the
sector as midpoint c and radius r, δz' = M_c δz + B p with M_c = diag(α) + diag(1 − α) A diag(c), B =
diag(1 − α) A diag(r), p_j = Δ_j δz_j, |Δ_j| ≤ 1. For a fixed diagonal Λ the LMI in P is the discrete bounded
real lemma: feasible iff sup_{|z| = ρ} σ̄(Λ^{1/2} (z − M_c)⁻¹ B Λ^{-1/2}) < 1, and then the stabilising solution
of a Riccati equation is a P. Λ^{1/2} = D is chosen so that this holds when it can be seen cheaply: with N the
elementwise largest |(z − M_c)⁻¹ B| over a grid of the circle, σ̄(D G D⁻¹) ≤ σ̄(D N D⁻¹) = ρ_Perron(N) for
D = sqrt(left / right Perron vector) of N. ρ is bisected on that cheap test, then P is solved for once (and
again a little higher while the dense check fails). Nothing of this is trusted: the dense check decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as linalg

from admc.passes.sdp_certificate import CHECK_MARGIN

FREQUENCIES = 9  # points of the half circle (the loop is real: G(z̄) is the conjugate of G(z))
RESOLUTION = 2e-3  # ρ bisected to this (absolute)
PERRON_ITERATIONS = 60
SCALING_FLOOR = 1e-4  # D ≥ this × max D: Λ's range stays within 10⁸ (the Riccati solve's conditioning)
LADDER = (0.01, 0.02, 0.04, 0.08, 0.16)  # relative steps above the bisection's ρ when its P fails
CLAIM_STEPS = (1e-7, 1e-4, 1e-3, 1e-2)  # ρ claimed above the exact value, the first the dense check passes
# Q = Λ + ε max(Λ) I and R = −(1 − ε)Λ in the Riccati equation: its P then makes F strictly negative
RICCATI_REGULARISER = 1e-6
DOUBLING_STEPS = 20  # it converges quadratically: 8 steps on two moons


@dataclass(frozen=True)
class FullCertificate:
    rho: float  # certified: checked densely with ``matrix`` and ``multipliers``
    matrix: np.ndarray  # P, symmetric positive definite
    multipliers: np.ndarray  # λ of the midpoint form (the dense check's; λ / r² in the sector form)


def _parts(loop: np.ndarray, alpha: np.ndarray, slope_low: np.ndarray, slope: np.ndarray):
    """The loop with unread channels' columns zeroed (σ constant there), its sector with r > 0, M_c and B."""
    unread = slope <= 0.0
    loop = np.where(unread[None, :], 0.0, loop)
    slope_low, slope = np.where(unread, 0.0, slope_low), np.where(unread, 1.0, slope)
    centre, radius = (slope_low + slope) / 2.0, (slope - slope_low) / 2.0
    relaxed = (1.0 - alpha)[:, None] * loop
    return loop, slope_low, slope, np.diag(alpha) + relaxed * centre[None, :], relaxed * radius[None, :]


def _perron_scaling(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """ρ of a nonnegative matrix (a Collatz-Wielandt upper bound, from power iteration) and D = sqrt(left / right
    Perron vector): then ‖D N D⁻¹‖₂ = ρ(N). Approximate vectors only make the test stricter or the later check
    fail; neither makes a certificate unsound."""
    shifted = matrix + 1e-9 * np.max(matrix, initial=0.0)  # positive: a unique Perron vector, power iteration
    right = left = np.ones(matrix.shape[0])
    for _ in range(PERRON_ITERATIONS):
        right, left = shifted @ right, left @ shifted
        right, left = right / np.max(right), left / np.max(left)
    bound = float(np.max((shifted @ right) / right))
    return bound, np.sqrt(left / right)


class _Frequency:
    """The cheap test at ρ: the Perron root of max over the circle |z| = ρ of |(z − M_c)⁻¹ B|, and its D. The
    resolvent is solved for directly at each point (M_c is often defective: a block cycle with a small block has
    many zero eigenvalues, and an eigenvector basis would be singular)."""

    def __init__(self, centre: np.ndarray, spread: np.ndarray):
        self.centre, self.spread = centre, spread.astype(complex)
        self._radius: float | None = None
        self.angles = np.exp(1j * np.linspace(0.0, np.pi, FREQUENCIES))

    @property
    def radius(self) -> float:
        """ρ(M_c): no norm certifies less (computed only when a bisection needs its lower end)."""
        if self._radius is None:
            self._radius = float(np.max(np.abs(linalg.eigvals(self.centre, check_finite=False)), initial=0.0))
        return self._radius

    def test(self, rho: float) -> tuple[float, np.ndarray] | None:
        if rho <= self.radius * (1.0 + 1e-9):
            return None
        identity = np.eye(self.centre.shape[0])
        shifted = rho * self.angles[:, None, None] * identity[None] - self.centre[None]
        transfer = np.linalg.solve(shifted, np.broadcast_to(self.spread, shifted.shape))
        return _perron_scaling(np.max(np.abs(transfer), axis=0))


def _riccati(centre: np.ndarray, spread: np.ndarray, scaling: np.ndarray, rho: float) -> np.ndarray | None:
    """P with ĀᵀPĀ − P + ĀᵀPB̄((1 − ε)Λ − B̄ᵀPB̄)⁻¹B̄ᵀPĀ + Λ + ε max(Λ) I = 0 (Ā = M_c/ρ, B̄ = B/ρ, Λ = D²): the
    LMI with Λ then holds with room ε max(Λ) in both blocks. Solved by doubling (SDA: X = ĀᵀX(I + GX)⁻¹Ā + Q,
    G = −B̄((1 − ε)Λ)⁻¹B̄ᵀ; 8 steps and 5 ms at 66 channels, against 25 ms for scipy's QZ solver, the fallback)."""
    multiplier = scaling * scaling
    room = RICCATI_REGULARISER * float(np.max(multiplier))
    transition, inputs = centre / rho, spread / rho
    constant = np.diag(multiplier) + room * np.eye(scaling.size)
    matrix = _doubling(transition, -(inputs / ((1.0 - RICCATI_REGULARISER) * multiplier)[None, :]) @ inputs.T,
                       constant)
    if matrix is None:
        try:
            matrix = linalg.solve_discrete_are(transition, inputs, constant,
                                               -np.diag((1.0 - RICCATI_REGULARISER) * multiplier))
        except (linalg.LinAlgError, ValueError):
            return None
    return None if matrix is None or not np.all(np.isfinite(matrix)) else (matrix + matrix.T) / 2.0


def _doubling(transition: np.ndarray, gain: np.ndarray, constant: np.ndarray) -> np.ndarray | None:
    """The structure-preserving doubling iteration for X = AᵀX(I + GX)⁻¹A + H; None if it does not converge."""
    identity = np.eye(transition.shape[0])
    current, gain, value = transition.copy(), gain.copy(), constant.copy()
    for _ in range(DOUBLING_STEPS):
        try:
            solved = linalg.solve(identity + gain @ value, np.hstack([current, gain]), check_finite=False)
        except (linalg.LinAlgError, ValueError):
            return None
        applied, applied_gain = solved[:, :current.shape[1]], solved[:, current.shape[1]:]
        updated = value + current.T @ value @ applied
        gain = gain + current @ applied_gain @ current.T
        gain, current = (gain + gain.T) / 2.0, current @ applied
        updated = (updated + updated.T) / 2.0
        if not np.all(np.isfinite(updated)):
            return None
        if np.max(np.abs(updated - value)) <= 1e-13 * np.max(np.abs(updated)):
            return updated
        value = updated
    return None


def lmi_midpoint(loop: np.ndarray, alpha: np.ndarray, slope_low: np.ndarray, slope: np.ndarray,
                 matrix: np.ndarray, multipliers: np.ndarray, rho: float) -> np.ndarray:
    """F(ρ) in the midpoint form, dense 2n × 2n, assembled from the loop and the sector alone:
    [[M_cᵀPM_c − ρ²P + Λ, M_cᵀPB], [BᵀPM_c, BᵀPB − Λ]], the sector form under w = c z + r p (a congruence:
    the same definiteness; λ_sector = λ / r²), better scaled where r is tiny (saturated channels)."""
    centre, radius = (slope_low + slope) / 2.0, (slope - slope_low) / 2.0
    relaxed = (1.0 - alpha)[:, None] * loop
    stacked = np.hstack([np.diag(alpha) + relaxed * centre[None, :], relaxed * radius[None, :]])
    result = stacked.T @ matrix @ stacked
    size = alpha.size
    result[:size, :size] += np.diag(multipliers) - rho * rho * matrix
    result[size:, size:] -= np.diag(multipliers)
    return result


def certifies_full(loop: np.ndarray, alpha: np.ndarray, slope_low: np.ndarray, slope: np.ndarray,
                   matrix: np.ndarray, multipliers: np.ndarray, rho: float) -> bool:
    """The dense check: P ≻ 0 and −F(ρ) − margin × max |F| × I ≻ 0 (Cholesky factorisations), λ ≥ 0 (midpoint
    form)."""
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(multipliers)) and np.all(multipliers >= 0.0)):
        return False
    try:
        linalg.cholesky(matrix, check_finite=False)
    except linalg.LinAlgError:
        return False
    lmi = lmi_midpoint(loop, alpha, slope_low, slope, matrix, multipliers, rho)
    # λ_max(F) ≤ −m  ⇔  −F − m I ⪰ 0: one Cholesky factorisation (a fifth of the largest eigenvalue's cost);
    # its rounding, ~2n ε max|F|, is far inside the margin.
    try:
        linalg.cholesky(-lmi - CHECK_MARGIN * np.max(np.abs(lmi)) * np.eye(lmi.shape[0]), check_finite=False)
    except linalg.LinAlgError:
        return False
    return True


def exact_full_factor(centre: np.ndarray, spread: np.ndarray, matrix: np.ndarray, multipliers: np.ndarray
                      ) -> float | None:
    """The smallest ρ with F(ρ) ⪯ 0 for this (P, λ) (Schur complement on the p block; not yet checked)."""
    hidden = spread.T @ matrix @ spread - np.diag(multipliers)
    coupling = centre.T @ matrix @ spread
    try:
        factor = linalg.cholesky(-hidden, lower=True, check_finite=False)
        solved = linalg.solve_triangular(factor, coupling.T, lower=True, check_finite=False)
        reduced = centre.T @ matrix @ centre + np.diag(multipliers) + solved.T @ solved
        squared = linalg.eigh(reduced, matrix, eigvals_only=True, check_finite=False)[-1]
    except (linalg.LinAlgError, ValueError):
        return None
    return float(np.sqrt(max(squared, 0.0)))


def _prepare(loop: np.ndarray, alpha: np.ndarray, slope_low: np.ndarray, slope: np.ndarray) -> dict:
    loop, slope_low, slope, centre, spread = _parts(np.asarray(loop, dtype=float), alpha, slope_low, slope)
    return {"loop": loop, "alpha": alpha, "slope_low": slope_low, "slope": slope, "centre": centre,
            "spread": spread, "frequency": _Frequency(centre, spread)}


def _certify_at(case: dict, rho: float, tested: tuple[float, np.ndarray] | None = None, exact: bool = True
                ) -> FullCertificate | None:
    """(P, λ) for this ρ from the cheap test's scaling and the Riccati equation, confirmed densely, or None;
    with ``exact`` the smallest ρ below it that they certify (also checked) is claimed instead."""
    tested = tested or case["frequency"].test(rho)
    if tested is None or tested[0] >= 1.0:
        return None
    scaling = np.maximum(tested[1], np.max(tested[1]) * SCALING_FLOOR)
    matrix = _riccati(case["centre"], case["spread"], scaling, rho)
    if matrix is None:
        return None
    norm = case["alpha"].size / np.trace(matrix)  # F is homogeneous in (P, λ): scaled to trace P = n
    # the Riccati equation's Λ is that of Ā, B̄ (F divided by ρ²)
    matrix, multipliers = norm * matrix, norm * rho * rho * scaling * scaling
    smallest = exact_full_factor(case["centre"], case["spread"], matrix, multipliers) if exact else None
    candidates = [smallest + step for step in CLAIM_STEPS if smallest + step < rho] if smallest is not None else []
    for value in candidates + [rho]:
        if certifies_full(case["loop"], case["alpha"], case["slope_low"], case["slope"], matrix, multipliers, value):
            return FullCertificate(float(value), matrix, multipliers)
    return None


def _bracket(case: dict, low: float, upper: float) -> tuple[float, float, tuple | None]:
    """[low, high] with the cheap test failing at low and passing at high (its result kept): from a ρ already
    reached (low > 0) the box usually needs a little more, so the steps above it double from ``RESOLUTION``;
    otherwise the whole [ρ(M_c), upper]."""
    step, high = RESOLUTION, upper
    while low > 0.0 and low + step < upper:
        tested = case["frequency"].test(low + step)
        if tested is not None and tested[0] < 1.0:
            return max(low, low + step / 2.0), low + step, tested
        step *= 2.0
    return max(low, case["frequency"].radius), high, case["frequency"].test(high)


def _smallest(case: dict, low: float, upper: float) -> FullCertificate | None:
    """Bisection of the cheap test above ``low`` to ``RESOLUTION``, then the Riccati P at the ρ found (a little
    higher while the grid missed the peak or the dense check fails)."""
    low, high, passed = _bracket(case, low, upper)
    if passed is None or passed[0] >= 1.0:
        return None
    while high - low > RESOLUTION:
        middle = (low + high) / 2.0
        tested = case["frequency"].test(middle)
        if tested is not None and tested[0] < 1.0:
            high, passed = middle, tested
        else:
            low = middle
    for rho in [high] + [value for value in high * (1.0 + np.array(LADDER)) if value < upper] + [upper]:
        certified = _certify_at(case, rho, passed if rho == high else None)
        if certified is not None:
            return certified
    return None


def full_certificate(loop: np.ndarray, alpha: np.ndarray, slope_low: np.ndarray, slope: np.ndarray,
                     upper: float = 2.0) -> FullCertificate | None:
    """The smallest ρ ≤ ``upper`` this search certifies (checked densely) for σ' ∈ [``slope_low``, ``slope``]
    per channel, or None when it certifies none."""
    return _smallest(_prepare(loop, alpha, slope_low, slope), 0.0, upper)


def boxes_certificate(loop: np.ndarray, alpha: np.ndarray, sectors: list[tuple[np.ndarray, np.ndarray]],
                      upper: float = 2.0) -> tuple[float, list[FullCertificate]] | None:
    """One ρ ≤ ``upper`` that every sector (a, b) of the list certifies, each with its own (P, λ), or None.

    The largest of the boxes' smallest ρ is what is reported, so a box is first tried at the largest ρ found so
    far (one test, one Riccati solve, one check) and bisected above it only when that fails; the boxes are
    taken hardest first (the largest spectral radius of the midpoint loop), which keeps the bisections few."""
    cases = [_prepare(loop, alpha, low, high) for low, high in sectors]
    order = sorted(range(len(cases)), key=lambda position: -cases[position]["frequency"].radius)
    rho, found = 0.0, {}
    for position in order:
        certified = _certify_at(cases[position], rho, exact=False) if rho > 0.0 else None
        if certified is None:
            certified = _smallest(cases[position], rho, upper)
            if certified is None:
                return None
            rho = max(rho, certified.rho)
        found[position] = certified
    return rho, [found[position] for position in range(len(cases))]
