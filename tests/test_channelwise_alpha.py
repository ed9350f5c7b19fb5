"""Channel-wise α (issue 22): what per-channel freedom buys over block-wise α, checked against dense
eigenvalues and the block-wise bound's proof, and the acceptance rule on random programs."""

from __future__ import annotations

import numpy as np
import pytest
from block_programs import random_cycle_program

from admc.core.errors import AdmcError, ConvergenceError
from admc.ir.program import tabulate_static_injection
from admc.passes.alpha_channelwise import descend, worst_radius
from admc.passes.alpha_cycle import BlockCycle, blockwise_radius, search_blockwise
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor

IDEAL = AlphaCapabilities(0.0, 0.99, True, 0.0, settle_tolerance=1e-10)


def two_block_cycle(seed: int, dominant: complex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """J = [[0, B], [A, 0]] with 4 + 4 channels; with ``dominant`` real, scaled so the cycle product's
    dominant eigenvalue is exactly that (else the product's own). Returns J and the product's eigenvalues."""
    rng = np.random.default_rng(seed)
    first, second = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    if dominant is not None:
        values = np.linalg.eigvals(second @ first)
        first = first * abs(dominant) / np.max(np.abs(values))
    jacobian = np.zeros((8, 8))
    jacobian[4:, :4], jacobian[:4, 4:] = first, second
    return jacobian, np.linalg.eigvals(second @ first)


def best_blockwise(values: np.ndarray) -> tuple[np.ndarray, float]:
    cycle = BlockCycle(["a", "b"], [slice(0, 4), slice(4, 8)], values[None, :])
    low, high = np.full(2, 1e-3), np.ones(2)
    best, radius = None, np.inf
    for start in (np.ones(2), np.full(2, 0.5), np.full(2, 0.1)):  # the K = 2 search is cheap: several starts
        u = search_blockwise(cycle, low, high, start)
        value = float(blockwise_radius(cycle, u))
        if value < radius:
            best, radius = u, value
    return np.repeat(best, 4), radius


def test_channelwise_alpha_beats_the_blockwise_bound_on_a_positive_real_cycle() -> None:
    # With one α per block no α beats c^(1/K) for a positive real dominant cycle eigenvalue c (proved in
    # docs/alpha-selection.md, checked in test_cycle_damping_bound). With one α per channel it falls below.
    beaten = 0
    for seed in range(6):
        jacobian, values = two_block_cycle(seed, 0.95)
        dominant = values[np.argmax(np.abs(values))]
        if abs(dominant.imag) > 1e-9 or dominant.real < 0:
            continue
        start, blockwise = best_blockwise(values)
        assert blockwise >= np.sqrt(0.95) - 1e-9  # the bound, as the proof says
        u, _ = descend([jacobian], np.full(8, 1e-3), np.ones(8), start, max_steps=24)
        dense = float(np.max(np.abs(np.linalg.eigvals(np.eye(8) - u[:, None] * (np.eye(8) - jacobian)))))
        assert dense <= blockwise + 1e-12  # never worse than its start
        beaten += dense < np.sqrt(0.95) - 0.01
    assert beaten >= 1


@pytest.mark.parametrize("seed", range(4))
def test_channelwise_descent_stays_in_bounds_and_never_loses(seed: int) -> None:
    jacobian, values = two_block_cycle(seed + 10)
    rng = np.random.default_rng(seed)
    lower, upper = rng.uniform(0.0, 0.3, 8), rng.uniform(0.6, 1.0, 8)
    start = rng.uniform(lower, upper)
    u, solved = descend([jacobian, 0.7 * jacobian], lower, upper, start)
    assert solved >= 1
    assert np.all(u >= lower - 1e-12) and np.all(u <= upper + 1e-12)
    assert worst_radius([jacobian, 0.7 * jacobian], u) <= worst_radius([jacobian, 0.7 * jacobian], start) + 1e-12


def _program(seed: int, gain: float, steps: int, hidden: tuple[int, ...] = (4, 4)):
    program = random_cycle_program(hidden, seed, gain)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, steps + 1))
    times = np.array([phase.time for phases in schedule.steps for phase in phases])
    program.static_table = tabulate_static_injection(program, times)
    return program, schedule


def _settles(program, schedule, alpha, seed: int, samples: int = 64) -> bool:
    noise = np.random.default_rng(seed).standard_normal((samples, program.state_dimension))
    try:
        IdealExecutor(program, alpha, tolerance=1e-10, max_iterations=5_000).run(schedule, noise)
    except ConvergenceError:
        return False
    return True


def test_no_accepted_random_program_has_a_non_settling_fresh_sample(monkeypatch) -> None:
    # 60 random programs, some steep enough that no α settles them at few steps: every one the pass accepts
    # settles on 64 samples it has never seen (seed 99); the others are refused, never silently built.
    from admc.passes import alpha_acceptance

    monkeypatch.setattr(alpha_acceptance, "LARGEST_STEPS", 8)  # this test is about acceptance, not T_min's search
    accepted = refused = 0
    for case in range(60):
        gain = 1.0 + 3.0 * (case % 5) / 4
        program, schedule = _program(case, gain, (2, 3, 6)[case % 3])
        try:
            selection = select_alpha(program, schedule, IDEAL, "auto")
        except AdmcError as error:
            assert "on fresh samples" in str(error)
            refused += 1
            continue
        accepted += 1
        assert _settles(program, schedule, selection.alpha, seed=99), f"case {case} accepted but does not settle"
    assert accepted >= 20 and refused >= 1  # the sweep exercises both sides of the rule


def test_the_issue_non_settling_program_is_refused_or_settles() -> None:
    # Issue 22's case: hidden (8, 8), seed 0, weight gain 3, T = 6 was built although 46 of 64 fresh samples
    # did not settle.
    program, schedule = _program(0, 3.0, 6, hidden=(8, 8))
    try:
        selection = select_alpha(program, schedule, IDEAL, "auto")
    except AdmcError as error:
        assert "T_min" in str(error)
        return
    assert _settles(program, schedule, selection.alpha, seed=99)


def test_verify_reports_per_phase_the_samples_that_did_not_settle() -> None:
    # A program (α = 0) on which one of 64 samples never settles in phase 0: the ideal executor, asked to
    # record settling, stops at its limit instead of raising, and verify's link fails naming that phase.
    from admc.verify.chain import settled_link

    program, schedule = _program(22, 3.25, 3)
    noise = np.random.default_rng(99).standard_normal((64, 2))
    result = IdealExecutor(program, np.zeros(program.size), tolerance=1e-10, max_iterations=3_000,
                           record_settling=True).run(schedule, noise)
    fractions = {(step, phase): fraction for step, phase, fraction in result.settled}
    assert fractions[(0, 0)] == pytest.approx(63 / 64) and fractions[(1, 0)] == 1.0
    link = settled_link(result.settled)
    assert not link.passed and "worst step 0 phase 0" in link.name
    settled = IdealExecutor(program, np.zeros(program.size), tolerance=1e-10, max_iterations=3_000,
                            record_settling=True).run(schedule, noise[:1])
    assert settled_link(settled.settled).passed


def test_acceptance_refuses_on_its_first_samples_and_runs_every_sample_when_they_settle() -> None:
    """The acceptance screens its first ``ACCEPTANCE_SAMPLES[0]`` fresh samples alone: a non-settling α is refused
    there (and the whole batch, run independently, does not settle either), a settling one still runs them all."""
    from admc.passes.alpha_acceptance import (
        ACCEPTANCE_LIMIT,
        ACCEPTANCE_SAMPLES,
        ACCEPTANCE_SEED,
        SETTLE_MARGIN,
        settle_on_fresh_samples,
    )

    program, schedule = _program(0, 3.0, 6, hidden=(8, 8))  # issue 22's case: α = 0 does not settle
    refused = settle_on_fresh_samples(program, schedule, np.zeros(program.size), 1e-10)
    assert not refused.settled and refused.samples == ACCEPTANCE_SAMPLES[0] and "not settled" in refused.failure
    whole = np.random.default_rng(ACCEPTANCE_SEED).standard_normal((ACCEPTANCE_SAMPLES[1], program.state_dimension))
    with pytest.raises(ConvergenceError):
        IdealExecutor(program, np.zeros(program.size), tolerance=1e-10,
                      max_iterations=ACCEPTANCE_LIMIT // SETTLE_MARGIN).run(schedule, whole)
    calm, calm_schedule = _program(1, 1.0, 2)
    accepted = settle_on_fresh_samples(calm, calm_schedule, np.full(calm.size, 0.3), 1e-10)
    assert accepted.settled and accepted.samples > ACCEPTANCE_SAMPLES[0]
