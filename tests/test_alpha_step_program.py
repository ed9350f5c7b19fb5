"""The channel-wise α step program, written by hand in Clarabel's conic form, against the same problem in cvxpy.

cvxpy is the independent statement here: its own atoms (``inv_pos``, ``square``, ``norm``) and its own
canonicalisation reach the optimum the hand-built cones must reach. Optima can be non-unique in d, so the
objectives are compared, and the hand-built step is checked for feasibility on its own.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from admc.passes.alpha_step_program import solve_step


def _cvxpy_optimum(values, gradients, lowest, highest, current, weight, model) -> float:
    step, bound = cp.Variable(current.size), cp.Variable()
    real = values.real + gradients.real @ step
    imaginary = values.imag + gradients.imag @ step
    u = current + step
    if model == "after_skip":
        gain = cp.inv_pos(2 * u - cp.square(u))
    else:
        gain = 2 * cp.inv_pos(2 - u) - 1
    objective = bound + (weight * cp.sum(gain) / current.size if weight > 0 else 0)
    problem = cp.Problem(cp.Minimize(objective), [cp.norm(cp.vstack([real, imaginary]), 2, axis=0) <= bound,
                                                  step >= lowest, step <= highest])
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def _objective(step, values, gradients, current, weight, model) -> float:
    u = current + step
    gain = 1.0 / (u * (2.0 - u)) if model == "after_skip" else u / (2.0 - u)
    return float(np.max(np.abs(values + gradients @ step)) + (weight * np.mean(gain) if weight > 0 else 0.0))


def _case(seed: int, size: int, count: int):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=count) + 1j * rng.normal(size=count)
    gradients = rng.normal(size=(count, size)) + 1j * rng.normal(size=(count, size))
    current = rng.uniform(0.2, 0.95, size)
    trust = rng.uniform(0.05, 0.4)
    return values, gradients, np.maximum(0.05 - current, -trust), np.minimum(1.0 - current, trust), current


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("weight", "model"), [(0.0, "after_skip"), (0.05, "after_skip"), (0.5, "after_skip"),
                                               (0.05, "optical"), (0.5, "optical")])
def test_hand_built_cones_reach_cvxpys_optimum(seed: int, weight: float, model: str) -> None:
    values, gradients, lowest, highest, current = _case(seed, size=12 + 7 * seed, count=3 + 2 * seed)
    step = solve_step(values, gradients, lowest, highest, current, weight, model)
    assert step is not None
    assert np.all(step >= lowest - 1e-7) and np.all(step <= highest + 1e-7)
    expected = _cvxpy_optimum(values, gradients, lowest, highest, current, weight, model)
    assert _objective(step, values, gradients, current, weight, model) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_noise_term_moves_the_step_towards_less_noise() -> None:
    """With no eigenvalue to reduce (zero gradients) only the noise term acts: ``after_skip``'s gain
    1/(u(2 − u)) falls as u rises to 1, ``optical``'s u/(2 − u) falls as u falls, so the steps go opposite ways
    to the box's ends."""
    size = 5
    values, gradients = np.full(2, 0.5 + 0.0j), np.zeros((2, size), dtype=complex)
    current, lowest, highest = np.full(size, 0.5), np.full(size, -0.2), np.full(size, 0.2)
    upward = solve_step(values, gradients, lowest, highest, current, 1.0, "after_skip")
    downward = solve_step(values, gradients, lowest, highest, current, 1.0, "optical")
    np.testing.assert_allclose(upward, highest, atol=1e-6)
    np.testing.assert_allclose(downward, lowest, atol=1e-6)
