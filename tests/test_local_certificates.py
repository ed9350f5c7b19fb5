"""Local certificates (issue 22 item 4): the sector SDP, its slope bounds over a box, and the manifest's section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sparse
from block_programs import random_cycle_program
from models import StandardMlp, export_onnx, seeded

from admc.compiler.driver import build
from admc.ir.program import CLOSED, Phase, tabulate_static_injection
from admc.passes.local_certificates import TAIL_STARTS, BoxRecorder, slope_sector, widen
from admc.passes.loop_jacobian import loop_matrix, slope_bounds, slopes
from admc.passes.sample_certificates import boxes_certificate, certifies_full, full_certificate
from admc.passes.sdp_certificate import lmi_matrix, sdp_certificate
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor

PHASE = Phase(CLOSED, 1.0, 1.0, ())


def _case(seed: int = 2, gain: float = 0.9):
    program = random_cycle_program((8, 8), seed, gain, driven=False)
    alpha = np.full(program.size, 0.2)
    return program, alpha, loop_matrix(program, PHASE)


def _box(program, seed: int, half_width: float):
    """A box of states around a random centre: the sector of σ' over it, exactly."""
    centre = np.random.default_rng(seed).normal(0.0, 1.0, program.size)
    return centre - half_width, centre + half_width


def test_zero_lower_bound_is_the_global_certificate() -> None:
    """a = 0: the sector LMI is the global one term by term, and the search returns the same ρ."""
    program, alpha, loop = _case()
    slope = slope_bounds(program)
    global_certificate = sdp_certificate(loop, alpha, slope, 2.0)
    sector_certificate = sdp_certificate(loop, alpha, slope, 2.0, np.zeros(program.size))
    assert global_certificate is not None and sector_certificate is not None
    assert sector_certificate.rho == pytest.approx(global_certificate.rho, abs=1e-12)
    weights, multipliers = global_certificate.weights, global_certificate.multipliers
    size = program.size
    written = np.zeros((2 * size, 2 * size))  # [[0, Λ S / 2], [Λ S / 2, −Λ]] of the global certificate
    written[:size, size:] = written[size:, :size] = np.diag(multipliers * slope / 2.0)
    written[size:, size:] = -np.diag(multipliers)
    stacked = np.hstack([np.diag(alpha), (1.0 - alpha)[:, None] * loop.toarray()])
    written += stacked.T @ np.diag(weights) @ stacked
    written[:size, :size] -= 0.9 ** 2 * np.diag(weights)
    np.testing.assert_allclose(lmi_matrix(loop.toarray(), alpha, slope, weights, multipliers, 0.9,
                                          np.zeros(size)), written, atol=1e-12)


def test_slope_sector_bounds_every_difference_quotient_in_the_box() -> None:
    program, _, _ = _case()
    low, high = _box(program, 0, 0.4)
    lower, upper = slope_sector(program, low, high)
    rng = np.random.default_rng(1)
    first, second = rng.uniform(low, high, (500, program.size)), rng.uniform(low, high, (500, program.size))
    gains = np.array([group.sigma_gain for group in program.groups for _ in range(group.size)])
    hidden = slope_bounds(program) > 0
    quotient = (np.tanh(gains * first) - np.tanh(gains * second)) / (first - second)
    assert np.all(quotient[:, hidden] >= lower[hidden] - 1e-12)
    assert np.all(quotient[:, hidden] <= upper[hidden] + 1e-12)
    # and the bounds are attained (exact, not loose): σ' at the interval's points reaches both ends
    grid = np.linspace(low, high, 2001)
    sampled = slopes(program, grid)
    np.testing.assert_allclose(sampled.min(axis=0)[hidden], lower[hidden], rtol=1e-5)
    np.testing.assert_allclose(sampled.max(axis=0)[hidden], upper[hidden], rtol=1e-5)


def test_local_contraction_is_never_beaten_by_two_trajectories_in_the_box() -> None:
    """Pairs of states of the box, one application of the loop map: the P-distance shrinks by ρ at least."""
    program, alpha, loop = _case()
    low, high = _box(program, 3, 0.3)
    lower, upper = slope_sector(program, low, high)
    certificate = sdp_certificate(loop, alpha, upper, 2.0, lower)
    assert certificate is not None
    matrix, weights, rng = loop.toarray(), certificate.weights, np.random.default_rng(4)
    drive = rng.standard_normal(program.size)

    def step(state: np.ndarray) -> np.ndarray:
        return alpha * state + (1 - alpha) * (np.tanh(state) @ matrix.T + drive)

    def distance(difference: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum(weights * difference * difference, axis=-1))

    first = rng.uniform(low, high, (2000, program.size))
    # far pairs (anywhere in the box) and near pairs (a small step from the first)
    second = np.concatenate([rng.uniform(low, high, (1000, program.size)),
                             np.clip(first[1000:] + 1e-3 * rng.standard_normal((1000, program.size)), low, high)])
    ratio = distance(step(first) - step(second)) / distance(first - second)
    assert np.max(ratio) <= certificate.rho * (1 + 1e-9)
    assert np.max(ratio) > 0.3 * certificate.rho  # the pairs do probe the contraction


@pytest.mark.parametrize("seed", [0, 5])
def test_shrinking_the_sector_never_raises_the_certified_bound(seed: int) -> None:
    program, alpha, loop = _case(seed, 0.8)
    centre = (_box(program, seed, 0.0)[0])
    values = []
    for half_width in (2.0, 0.8, 0.3, 0.1):
        lower, upper = slope_sector(program, centre - half_width, centre + half_width)
        certificate = sdp_certificate(loop, alpha, upper, 3.0, lower)
        assert certificate is not None
        values.append(certificate.rho)
    global_certificate = sdp_certificate(loop, alpha, slope_bounds(program), 3.0)
    assert global_certificate is not None
    values.insert(0, global_certificate.rho)
    assert all(later <= earlier + 2e-3 for earlier, later in zip(values, values[1:], strict=False)), values
    assert values[-1] < values[0] - 0.05  # a narrow sector does certify less


def test_box_recorder_holds_every_state_of_the_loops() -> None:
    """Per sample and per tail start k, the box is the min/max of the loop's states from iteration k on (the
    start is iteration 0; here rerun one iteration at a time and compared)."""
    program, alpha, _ = _case()
    schedule = build_schedule("implicit-euler", np.linspace(0, 1, 3))
    program.biases = []
    program.static_table = tabulate_static_injection(program, np.array([0.5, 1.0]))
    noise = np.random.default_rng(0).standard_normal((4, program.state_dimension))
    recorder = BoxRecorder(program, alpha, tolerance=1e-10)
    result = recorder.run(schedule, noise)
    count = result.iterations[0][0]
    assert len(recorder.boxes) == 2 and count > TAIL_STARTS[2]
    # only the slowest closed loop's boxes are kept (the first on ties): here step 0's
    assert count >= result.iterations[1][0] and recorder.boxes[1] == (None, None)
    low, high = recorder.boxes[0]
    assert low.shape == (len(TAIL_STARTS), 4, program.size)
    visited = []
    for budget in range(1, count + 1):  # step 0's loop, stopped after each iteration
        executor = IdealExecutor(program, alpha, loop_iterations=budget)
        executor._closed = _keep_state(executor._closed, visited, budget == 1)
        executor.run(schedule, noise)
    states = np.stack(visited)  # [iteration, sample, n], iteration 0 the start
    for position, start in enumerate(TAIL_STARTS):
        if start > count:
            assert np.all(low[position] > high[position])  # no iteration reached: empty
            continue
        np.testing.assert_allclose(low[position], states[start:].min(axis=0), atol=1e-12)
        np.testing.assert_allclose(high[position], states[start:].max(axis=0), atol=1e-12)
    wider = widen(low[0], high[0], 0.1)
    np.testing.assert_allclose(wider[1] - wider[0], 1.2 * (high[0] - low[0]))


def _keep_state(closed, visited: list, with_start: bool):
    def wrapped(step, index, compiled, drive, state, result):
        updated = closed(step, index, compiled, drive, state.copy(), result)
        if step == 0:
            visited.extend(([state.copy()] if with_start else []) + [updated[0].copy()])
        return updated
    return wrapped


def test_tiny_build_local_bound_is_below_the_global_one(tmp_path) -> None:
    """A small MLP whose loop needs ~250 iterations at T = 4: the global bounds are > 2, the local one is lower."""
    model = export_onnx(seeded(StandardMlp((8, 8)), 0, 2.0), tmp_path / "tiny.onnx")
    bundle = build(model, tmp_path / "bundle", target="ideal", steps=4)
    section = json.loads((bundle / "manifest.json").read_text())["convergence"]
    local = section["local"]
    assert local["margin"] > 0 and local["samples"] > 0 and len(local["phases"]) == 1
    entry = local["phases"][0]
    closed = {(phase["step"], phase["phase"]): phase for phase in section["phases"]}
    slowest = max(section["phases"], key=lambda phase: phase["measured_iterations"])
    assert (entry["step"], entry["phase"]) == (slowest["step"], slowest["phase"])
    assert entry["global"] == closed[(entry["step"], entry["phase"])]["best"]
    assert entry["contraction_raw"] is not None and entry["contraction_raw"] < min(1.0, 0.9 * entry["global"])
    assert entry["contraction"] == entry["contraction_raw"]
    assert entry["from_iteration"] in TAIL_STARTS and entry["boxes"] == local["samples"]
    assert entry["certified_iterations"] > entry["from_iteration"]


def test_program_above_the_sdp_limit_gets_no_semidefinite_search_and_says_so(tmp_path, monkeypatch) -> None:
    """The dense SDP is cubic in the channels: above ``SDP_LIMIT`` neither it nor the local certificates run
    (a 3.3M-weight build ran out of memory in the local one), and the manifest's notes say why."""
    import admc.passes.convergence_certificates as certificates
    import admc.passes.local_certificates as local_certificates
    import admc.passes.loop_budget as loop_budget

    def refuse(*arguments, **options):
        raise AssertionError("the local SDP ran above the limit")

    monkeypatch.setattr(loop_budget, "SDP_LIMIT", 10)
    monkeypatch.setattr(certificates, "SDP_LIMIT", 10)
    monkeypatch.setattr(loop_budget, "local_certificate", refuse)
    assert local_certificates.local_certificate is not refuse
    model = export_onnx(seeded(StandardMlp((8, 8)), 0, 2.0), tmp_path / "tiny.onnx")
    bundle = build(model, tmp_path / "bundle", target="ideal", steps=4)
    section = json.loads((bundle / "manifest.json").read_text())["convergence"]
    assert section["local"]["phases"] == []
    assert all(phase["sdp"] is None for phase in section["phases"])
    assert any("no semidefinite certificates" in note and "> 10" in note for note in section["notes"])


def _full_case(seed: int = 0, gain: float = 1.2, half_width: float = 0.2):
    """A block cycle (6 + 6 hidden channels, 2 state) at α = 0.1 on a box of half width 0.2 around a random
    centre: the diagonal search certifies 1.06 there, a full P 0.72."""
    program = random_cycle_program((6, 6), seed, gain, driven=False)
    alpha = np.full(program.size, 0.1)
    centre = np.random.default_rng(seed).normal(0.0, 1.0, program.size)
    low, high = centre - half_width, centre + half_width
    return program, alpha, loop_matrix(program, PHASE).toarray(), low, high, *slope_sector(program, low, high)


def test_full_certificate_passes_the_dense_check_in_both_forms_and_no_further() -> None:
    """The (P, λ, ρ) returned pass the midpoint-form check, the sector form (the diagonal certificate's own
    assembly, λ / r²) is negative definite too, the same (P, λ) fail 0.01 lower, and ρ is not below the
    spectral radius of the loop at the sector's end slopes (no norm does better)."""
    program, alpha, loop, _, _, lower, upper = _full_case()
    certificate = full_certificate(loop, alpha, lower, upper, 3.0)
    assert certificate is not None and certificate.rho < 1.0
    matrix, multipliers, rho = certificate.matrix, certificate.multipliers, certificate.rho
    np.testing.assert_allclose(matrix, matrix.T)
    assert certifies_full(loop, alpha, lower, upper, matrix, multipliers, rho)
    assert not certifies_full(loop, alpha, lower, upper, matrix, multipliers, rho - 0.01)
    radius = (upper - lower) / 2.0
    sector_form = lmi_matrix(loop, alpha, upper, matrix, multipliers / radius ** 2, rho, lower)
    assert np.linalg.eigvalsh(sector_form)[-1] < 0.0
    for slopes_at_an_end in (lower, upper):
        relaxed = np.diag(alpha) + (1 - alpha)[:, None] * loop * slopes_at_an_end[None, :]
        assert rho >= np.max(np.abs(np.linalg.eigvals(relaxed))) - 1e-9


def test_full_p_certifies_below_one_where_the_diagonal_search_does_not() -> None:
    program, alpha, loop, _, _, lower, upper = _full_case()
    diagonal = sdp_certificate(sparse.csr_matrix(loop), alpha, upper, 3.0, lower)
    full = full_certificate(loop, alpha, lower, upper, 3.0)
    assert diagonal is not None and full is not None
    assert full.rho < 1.0 < diagonal.rho


def test_full_contraction_is_never_beaten_by_pairs_or_trajectories_in_the_box() -> None:
    """Measured in the certificate's P-norm: pairs of box states after one application, and two trajectories of
    the loop (a drive whose fixed point is in the box) for every iteration where both stay in the box."""
    program, alpha, loop, low, high, lower, upper = _full_case()
    certificate = full_certificate(loop, alpha, lower, upper, 3.0)
    assert certificate is not None
    rng = np.random.default_rng(4)
    fixed = (low + high) / 2.0
    drive = fixed - np.tanh(fixed) @ loop.T  # the loop's fixed point is the box's centre

    def step(state: np.ndarray) -> np.ndarray:
        return alpha * state + (1 - alpha) * (np.tanh(state) @ loop.T + drive)

    def distance(difference: np.ndarray) -> np.ndarray:
        return np.sqrt(np.einsum("...i,ij,...j->...", difference, certificate.matrix, difference))

    first = rng.uniform(low, high, (2000, program.size))
    second = np.concatenate([rng.uniform(low, high, (1000, program.size)),
                             np.clip(first[1000:] + 1e-3 * rng.standard_normal((1000, program.size)), low, high)])
    ratio = distance(step(first) - step(second)) / distance(first - second)
    assert np.max(ratio) <= certificate.rho * (1 + 1e-9)
    assert np.max(ratio) > 0.5 * certificate.rho  # the pairs do probe the contraction
    states, others, ratios = rng.uniform(low, high, (64, program.size)), rng.uniform(low, high, (64, program.size)), []
    for _ in range(30):
        inside = np.all((states >= low) & (states <= high) & (others >= low) & (others <= high), axis=1)
        updated, updated_others = step(states), step(others)
        ratios.extend((distance(updated - updated_others) / distance(states - others))[inside])
        states, others = updated, updated_others
    assert len(ratios) > 64 and max(ratios) <= certificate.rho * (1 + 1e-9)


def test_one_rho_for_several_boxes_is_certified_on_each_by_its_own_p() -> None:
    program, alpha, loop, _, _, _, _ = _full_case()
    centres = np.random.default_rng(7).normal(0.0, 0.8, (3, program.size))
    sectors = [slope_sector(program, centre - 0.15, centre + 0.15) for centre in centres]
    found = boxes_certificate(loop, alpha, sectors, 3.0)
    assert found is not None
    rho, certificates = found
    separate = [full_certificate(loop, alpha, lower, upper, 3.0) for lower, upper in sectors]
    assert rho >= max(certificate.rho for certificate in separate) - 1e-3
    assert rho <= max(certificate.rho for certificate in separate) + 0.02
    for (lower, upper), certificate in zip(sectors, certificates, strict=True):
        assert certificate.rho <= rho
        assert certifies_full(loop, alpha, lower, upper, certificate.matrix, certificate.multipliers, rho)
