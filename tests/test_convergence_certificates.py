"""The semidefinite convergence certificate: its independent check, its hierarchy with the norm bounds, the
contraction it promises on random starts, and its size limit (issue 8)."""

from __future__ import annotations

from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sparse
from block_programs import random_cycle_program

from admc.ir.program import CLOSED, Phase
from admc.passes.convergence_certificates import SDP_LIMIT, certify_phase
from admc.passes.lmi_barrier import assemble, term_matrix
from admc.passes.loop_jacobian import loop_matrix, slope_bounds
from admc.passes.sdp_certificate import (
    certifies,
    exact_factor,
    lmi_matrix,
    lmi_terms,
    sdp_certificate,
    smallest_certified,
    spectral_lower_bound,
)

PHASE = Phase(CLOSED, 1.0, 1.0, ())


def _case(hidden: tuple[int, ...], seed: int, gain: float, alpha_value: float, driven: bool = True):
    program = random_cycle_program(hidden, seed, gain, driven=driven)
    alpha = np.full(program.size, alpha_value)
    return program, alpha, loop_matrix(program, PHASE), slope_bounds(program)


def _p_norm(vector: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sqrt(np.sum(weights * vector * vector)))


@pytest.fixture(scope="module")
def certified_case():
    program, alpha, loop, slope = _case((8, 8), 2, 0.5, 0.2, driven=False)
    certificate = sdp_certificate(loop, alpha, slope, 1.0)
    assert certificate is not None and certificate.rho < 1.0
    return program, alpha, loop.toarray(), slope, certificate


def test_dense_check_accepts_the_certificate_and_rejects_what_it_does_not_prove(certified_case) -> None:
    _, alpha, loop, slope, certificate = certified_case
    weights, multipliers = certificate.weights, certificate.multipliers
    assert certifies(loop, alpha, slope, weights, multipliers, certificate.rho)
    # below the exact value the LMI has a positive eigenvalue; without multipliers the S-procedure is gone
    exact = exact_factor(loop, alpha, slope, weights, multipliers)
    assert exact <= certificate.rho <= exact + 1e-3
    assert not certifies(loop, alpha, slope, weights, multipliers, exact - 1e-3)
    assert not certifies(loop, alpha, slope, weights, np.zeros_like(multipliers), certificate.rho)
    assert not certifies(loop, alpha, slope, -weights, multipliers, certificate.rho)
    assert smallest_certified(loop, alpha, slope, weights, np.zeros_like(multipliers)) is None


def test_schur_value_agrees_with_a_bisection_on_the_dense_eigenvalue(certified_case) -> None:
    _, alpha, loop, slope, certificate = certified_case
    weights, multipliers = certificate.weights, certificate.multipliers
    low, high = 0.0, 2.0
    for _ in range(40):
        middle = (low + high) / 2
        top = np.linalg.eigvalsh(lmi_matrix(loop, alpha, slope, weights, multipliers, middle))[-1]
        low, high = (low, middle) if top <= 0.0 else (middle, high)
    assert exact_factor(loop, alpha, slope, weights, multipliers) == pytest.approx(high, abs=1e-8)


def test_solver_terms_assemble_the_same_lmi_as_the_check() -> None:
    """The barrier's rank-two terms (both its assemblies) and the check's term-by-term F(ρ) are one matrix."""
    program = random_cycle_program((6, 7), 4, 0.7)
    alpha = np.linspace(0.05, 0.6, program.size)
    loop, slope = loop_matrix(program, PHASE), slope_bounds(program)
    basis, cores = lmi_terms(loop, alpha, slope)
    cores[:program.size, 1, 1] = -0.8 ** 2
    x = np.random.default_rng(0).uniform(0.2, 3.0, 2 * program.size)
    expected = lmi_matrix(loop.toarray(), alpha, slope, x[:program.size], x[program.size:], 0.8)
    np.testing.assert_allclose(assemble(basis, cores, x), expected, atol=1e-12)
    np.testing.assert_allclose((term_matrix(basis, cores) @ x).reshape(expected.shape), expected, atol=1e-12)


def test_certificate_is_never_below_the_spectral_lower_bound(certified_case) -> None:
    _, alpha, loop, slope, certificate = certified_case
    assert certificate.rho >= certificate.lower == spectral_lower_bound(loop, alpha, slope)
    assert certificate.lower >= float(np.max(alpha))


def test_search_is_near_the_optimum_of_the_lmi_an_external_solver_finds() -> None:
    """SCS (through cvxpy) finds no diagonal certificate 0.01 below our ρ, and finds one 0.01 above it."""
    program, alpha, loop, slope = _case((8, 8), 1, 0.8, 0.2, driven=False)
    certificate = sdp_certificate(loop, alpha, slope, 1.0)
    assert certificate is not None
    dense, size = loop.toarray(), program.size
    weights, multipliers = cp.Variable(size), cp.Variable(size)
    rho_squared = cp.Parameter(nonneg=True)
    stacked = np.hstack([np.diag(alpha), (1.0 - alpha)[:, None] * dense])
    slope_matrix = np.diag(slope / 2.0)
    matrix = cp.bmat([[-rho_squared * cp.diag(weights), slope_matrix @ cp.diag(multipliers)],
                      [cp.diag(multipliers) @ slope_matrix, -cp.diag(multipliers)]])
    matrix = matrix + stacked.T @ cp.diag(weights) @ stacked
    problem = cp.Problem(cp.Minimize(0), [(matrix + matrix.T) / 2 << -1e-6 * np.eye(2 * size), weights >= 1,
                                          multipliers >= 0])

    def feasible(rho: float) -> bool:
        rho_squared.value = rho * rho
        problem.solve(solver=cp.SCS, eps=1e-8, max_iters=50_000)
        return problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)

    assert not feasible(certificate.rho - 0.01)
    assert feasible(certificate.rho + 0.01)


@pytest.mark.parametrize(("hidden", "seed", "gain", "alpha_value"), [
    ((8, 8), 0, 0.5, 0.2), ((8, 8), 3, 0.8, 0.2), ((32, 32, 32), 3, 0.5, 0.2), ((40, 40), 5, 0.6, 0.3),
    ((60, 60), 5, 0.4, 0.3)])
def test_hierarchy_and_random_starts_contract_in_the_certified_norm(hidden, seed, gain, alpha_value) -> None:
    program, alpha, loop, slope = _case(hidden, seed, gain, alpha_value)
    certificate = certify_phase(program, PHASE, alpha, 1e-6)
    assert certificate["sdp"] <= certificate["block"] <= certificate["theorem1"]
    raw = sdp_certificate(loop, alpha, slope, min(1.0, certificate["block"]))
    if program.size > 64:
        assert raw is not None, "the SDP runs (and certifies) above the old 64-channel limit"
    if raw is None:
        return
    assert certificate["sdp_raw"] == pytest.approx(raw.rho)
    # Random pairs of starts with the same drive: ‖δz‖_P shrinks by ρ every iteration (tanh slopes in [0, 1]),
    # and the Euclidean distance by ρ^k up to the norm-equivalence constant √(max p / min p).
    rng = np.random.default_rng(seed)
    matrix, weights = loop.toarray(), raw.weights
    equivalence = np.sqrt(weights.max() / weights.min())
    for _ in range(4):
        drive = rng.standard_normal(program.size)
        first, second = 3 * rng.standard_normal(program.size), 3 * rng.standard_normal(program.size)
        start_p, start = _p_norm(first - second, weights), np.linalg.norm(first - second)
        previous = start_p
        for iteration in range(1, 40):
            first = alpha * first + (1 - alpha) * (matrix @ np.tanh(first) + drive)
            second = alpha * second + (1 - alpha) * (matrix @ np.tanh(second) + drive)
            distance_p = _p_norm(first - second, weights)
            # (1e-12: rounding of states of size ~1, once the two trajectories have met)
            assert distance_p <= raw.rho * previous * (1 + 1e-9) + 1e-12
            assert np.linalg.norm(first - second) <= equivalence * raw.rho ** iteration * start * (1 + 1e-9) + 1e-12
            previous = distance_p


def test_sdp_runs_up_to_a_few_hundred_channels() -> None:
    assert SDP_LIMIT >= 300
    program, alpha, _, _ = _case((33, 33, 33), 3, 0.5, 0.2)
    assert certify_phase(program, PHASE, alpha, 1e-6)["sdp_raw"] is not None
    assert certify_phase(program, PHASE, alpha, 1e-6, sdp=False)["sdp_raw"] is None


def test_loop_the_sdp_cannot_certify_falls_back_to_the_block_bound() -> None:
    program, alpha, loop, slope = _case((8, 8), 0, 0.8, 0.2, driven=False)
    assert spectral_lower_bound(loop.toarray(), alpha, slope) < 1.0  # so the search does run
    certificate = certify_phase(program, PHASE, alpha, 1e-6)
    assert certificate["sdp_raw"] is None and certificate["sdp"] == certificate["block"] > 1.0


def _relu_program(seed: int, gain: float):
    """The random cycle with ReLU hidden groups (σ' ∈ {0, 1}): the slope bound must be 1 there, not 0."""
    program = random_cycle_program((10, 10), seed, gain)
    groups = [replace(group, activation="relu") if group.role == "hidden" else group for group in program.groups]
    return replace(program, groups=groups)


def test_relu_channels_are_slope_restricted_not_constant() -> None:
    program = _relu_program(1, 0.6)
    assert np.all(slope_bounds(program) == 1.0)
    alpha = np.full(program.size, 0.2)
    certificate = certify_phase(program, PHASE, alpha, 1e-6)
    # with ReLU channels read as constants every bound collapsed to 0 (a 36-iteration loop "certified" for 1)
    assert certificate["theorem1"] > certificate["block"] > 0.3
    raw = sdp_certificate(loop_matrix(program, PHASE), alpha, slope_bounds(program), 1.0)
    assert raw is not None and raw.rho > 0.3
    hidden = np.array([group.activation == "relu" for group in program.groups
                       for _ in range(group.size)])
    matrix, rng = loop_matrix(program, PHASE).toarray(), np.random.default_rng(0)

    def sigma(state: np.ndarray) -> np.ndarray:
        return np.where(hidden, np.maximum(state, 0.0), np.tanh(state))

    for _ in range(4):
        drive = rng.standard_normal(program.size)
        first, second = 3 * rng.standard_normal(program.size), 3 * rng.standard_normal(program.size)
        previous = _p_norm(first - second, raw.weights)
        for _ in range(30):
            first = alpha * first + (1 - alpha) * (matrix @ sigma(first) + drive)
            second = alpha * second + (1 - alpha) * (matrix @ sigma(second) + drive)
            distance = _p_norm(first - second, raw.weights)
            assert distance <= raw.rho * previous * (1 + 1e-9) + 1e-12
            previous = distance


def test_channels_with_slope_bound_zero_do_not_stall_the_search() -> None:
    """A group read by no block (slope bound 0) is dropped from the S-procedure, not left with a free multiplier."""
    program, alpha, loop, slope = _case((8, 8), 2, 0.5, 0.2, driven=False)
    reference = sdp_certificate(loop, alpha, slope, 1.0)
    # one more group of 5 channels that nothing reads and that is fed by the state: it cannot change the loop
    size = program.size
    extra = sparse.lil_matrix((size + 5, size + 5))
    extra[:size, :size] = loop
    extra[size:, :2] = np.random.default_rng(0).standard_normal((5, 2))
    certificate = sdp_certificate(extra.tocsr(), np.full(size + 5, 0.2), np.concatenate([slope, np.zeros(5)]), 1.0)
    assert reference is not None and certificate is not None
    assert certificate.rho == pytest.approx(reference.rho, abs=2e-3)


def test_lanczos_block_norm_is_an_upper_bound_close_to_the_svd() -> None:
    """Blocks above DENSE_NORM_LIMIT get their norm from svds on a float32 copy, raised by a margin and the copy's
    rounding: never below the float64 SVD's, within 1e-4 of it; also for a block whose two largest singular values
    are 1e-7 apart (Lanczos converges slowest there) and whose entries float32 cannot hold."""
    from admc.passes.convergence_certificates import DENSE_NORM_LIMIT, _spectral_norm

    rng = np.random.default_rng(4)
    wide = rng.standard_normal((DENSE_NORM_LIMIT + 88, 40)) @ rng.standard_normal((40, DENSE_NORM_LIMIT + 20))
    left, _ = np.linalg.qr(rng.standard_normal((DENSE_NORM_LIMIT + 40, 200)))
    right, _ = np.linalg.qr(rng.standard_normal((DENSE_NORM_LIMIT + 10, 200)))
    singular = np.concatenate([[1.0, 1.0 - 1e-7], np.linspace(0.9, 0.01, 198)]) * (1.0 + 1e-9 * np.pi)
    clustered = (left * singular) @ right.T
    for matrix in (rng.standard_normal((DENSE_NORM_LIMIT + 60, 300)), wide, clustered):
        exact = float(np.linalg.svd(matrix, compute_uv=False)[0])
        assert exact <= _spectral_norm(matrix) <= exact * (1 + 1e-4)


def test_block_norm_memo_gives_the_same_bits_and_computes_each_pair_once(monkeypatch) -> None:
    """``group_norms`` with a memo: the T_min bounds and a phase's certificate share block norms; the values are
    those computed afresh, bit for bit, and a pair already in the memo costs no new norm."""
    from admc.passes import convergence_certificates

    program, _, _, _ = _case((6, 5), 4, 1.0, 0.2)
    fresh = convergence_certificates.group_norms(program, PHASE)
    memo: dict = {}
    first = convergence_certificates.group_norms(program, PHASE, memo)
    calls = []
    original = convergence_certificates._spectral_norm
    monkeypatch.setattr(convergence_certificates, "_spectral_norm", lambda matrix: calls.append(1) or original(matrix))
    second = convergence_certificates.group_norms(program, PHASE, memo)
    for left, middle, right in zip(fresh, first, second, strict=True):
        assert left.tobytes() == middle.tobytes() == right.tobytes()
    assert calls == [] and len(memo) == np.count_nonzero(fresh[1])
    other = replace(PHASE, step_scale=0.5)
    halved = convergence_certificates.group_norms(program, other, memo)
    assert calls and halved[1].tobytes() == convergence_certificates.group_norms(program, other)[1].tobytes()
