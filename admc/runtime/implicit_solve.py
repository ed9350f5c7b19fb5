"""Implicit steps of the reference executor: y = base + c · f(y, t') solved per sample to a tight tolerance.

Requires: a velocity f(x [B, d], t [B]) -> [B, d] (one with a ``jacobian(x, t) -> [B, d, d]`` method gets
exact Newton steps) wrapped in :class:`CountingVelocity`. Guarantees: ``solve_implicit`` iterates until the
max-abs residual y − base − c f(y, t') of every sample is ≤ 1e-12 · max(1, max|base|, max|y|) (the scale
keeps the target above float64 rounding of the residual itself), and past that target for as long as an
iteration still halves the residual (the error in y is the residual amplified by ‖(I − c J)⁻¹‖, so stopping
right at the target would leave ~1e-11 errors): fixed-point iteration warm-started from explicit Euler,
then, for samples where it does not contract within its budget, damped Newton with the velocity's Jacobian
(or a central finite-difference one). A sample that still misses the target raises ``ConvergenceError``
naming the step, the time and the residual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from admc.core.errors import ConvergenceError

VelocityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

RELATIVE_TOLERANCE = 1e-12
# About 4 ulp: below this a residual is rounding noise, so polishing stops.
RELATIVE_FLOOR = 1e-15
FIXED_POINT_BUDGET = 200
NEWTON_BUDGET = 50


class CountingVelocity:
    """Wraps f to count batched evaluations."""

    def __init__(self, velocity: VelocityFunction) -> None:
        self.velocity = velocity
        self.evaluations = 0

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        return np.asarray(self.velocity(x, t), dtype=np.float64)


def _sample_max(values: np.ndarray) -> np.ndarray:
    """Per-sample max-abs; NaN counts as infinitely large so it never passes a tolerance."""
    result = np.max(np.abs(values), axis=1)
    return np.where(np.isnan(result), np.inf, result)


def _tolerance(base: np.ndarray, y: np.ndarray, relative: float = RELATIVE_TOLERANCE) -> np.ndarray:
    return relative * np.maximum(1.0, np.maximum(_sample_max(base), _sample_max(y)))


def _keep_going(residual: np.ndarray, previous: np.ndarray, base: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Samples that still need iterations: above the target, or past it but still improving quickly.

    Polishing past the target matters because the error in y is the residual amplified by
    ‖(I − c J)⁻¹‖; it stops at the rounding floor or when an iteration no longer halves the residual.
    """
    above_target = residual > _tolerance(base, y)
    improving = (residual > _tolerance(base, y, RELATIVE_FLOOR)) & (residual < 0.5 * previous)
    return above_target | improving


def _finite_difference_jacobian(velocity: CountingVelocity, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Central differences, one batched pair of calls per feature; step ~ eps^(1/3) balances the errors."""
    batch, dimension = y.shape
    jacobian = np.empty((batch, dimension, dimension))
    for feature in range(dimension):
        step = 6e-6 * np.maximum(1.0, np.abs(y[:, feature]))
        forward = y.copy()
        backward = y.copy()
        forward[:, feature] += step
        backward[:, feature] -= step
        # Divide by the steps actually taken (after rounding) to keep the quotient consistent.
        taken = forward[:, feature] - backward[:, feature]
        jacobian[:, :, feature] = (velocity(forward, t) - velocity(backward, t)) / taken[:, None]
    return jacobian


@dataclass
class Solve:
    y: np.ndarray
    residual: float
    fixed_point_iterations: int
    newton_iterations: int


def _newton_direction(system: np.ndarray, residual_vector: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(system, residual_vector[..., None])[..., 0]
    except np.linalg.LinAlgError:
        # A singular system in some sample: the least-squares step still reduces the residual where it can.
        return np.stack(
            [
                np.linalg.lstsq(matrix, vector, rcond=None)[0]
                for matrix, vector in zip(system, residual_vector, strict=True)
            ]
        )


def _newton(
    velocity: CountingVelocity,
    base: np.ndarray,
    scale: float,
    y: np.ndarray,
    time: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Damped Newton on r(y) = y − base − scale f(y, t') for the samples given; returns y, residual, steps."""
    batch, dimension = y.shape
    times = np.full(batch, time)
    jacobian_method = getattr(velocity.velocity, "jacobian", None)
    y = y.copy()
    residual_vector = y - base - scale * velocity(y, times)
    residual = _sample_max(residual_vector)
    previous = np.full(batch, np.inf)
    steps = 0
    while steps < NEWTON_BUDGET:
        pending = _keep_going(residual, previous, base, y)
        if not pending.any():
            break
        steps += 1
        index = np.flatnonzero(pending)
        if jacobian_method is not None:
            jacobian = np.asarray(jacobian_method(y[index], times[index]), dtype=np.float64)
        else:
            jacobian = _finite_difference_jacobian(velocity, y[index], times[index])
        direction = _newton_direction(np.eye(dimension)[None] - scale * jacobian, residual_vector[index])
        # Backtracking: halve the step for samples whose residual did not decrease enough.
        damping = np.ones(index.size)
        waiting = np.arange(index.size)
        previous[index] = residual[index]
        for _ in range(30):
            rows = index[waiting]
            trial = y[rows] - damping[waiting, None] * direction[waiting]
            trial_vector = trial - base[rows] - scale * velocity(trial, times[rows])
            trial_residual = _sample_max(trial_vector)
            better = trial_residual < residual[rows] * (1.0 - 1e-4 * damping[waiting])
            y[rows[better]] = trial[better]
            residual_vector[rows[better]] = trial_vector[better]
            residual[rows[better]] = trial_residual[better]
            damping[waiting[~better]] *= 0.5
            waiting = waiting[~better]
            if waiting.size == 0:
                break
        # Samples no step could improve have stalled; stop iterating them (the caller checks the target).
        previous[index[waiting]] = residual[index[waiting]]
        if waiting.size == index.size:
            break
    return y, residual, steps


def solve_implicit(
    velocity: CountingVelocity,
    base: np.ndarray,
    scale: float,
    warm_start: np.ndarray,
    time: float,
    step: int,
    solver: str,
) -> Solve:
    """Solve y = base + scale · f(y, time) per sample to the tolerance; see the module docstring."""
    batch = base.shape[0]
    times = np.full(batch, time)
    y = warm_start.copy()
    best_y = y.copy()
    best_residual = np.full(batch, np.inf)
    previous = np.full(batch, np.inf)
    active = np.arange(batch)
    iterations = 0
    while iterations < FIXED_POINT_BUDGET and active.size:
        iterations += 1
        image = base[active] + scale * velocity(y[active], times[active])
        # The fixed-point residual of y is exactly the distance to its image.
        current = _sample_max(y[active] - image)
        improved = current < best_residual[active]
        best_residual[active[improved]] = current[improved]
        best_y[active[improved]] = y[active[improved]]
        going = _keep_going(current, previous[active], base[active], y[active])
        # Blown-up samples go straight to Newton instead of wasting the budget.
        diverging = ~np.isfinite(current) | (current > 1e6 * best_residual[active])
        previous[active] = current
        y[active] = image
        active = active[going & ~diverging]
    y = best_y
    residual = best_residual
    unresolved = np.flatnonzero(residual > _tolerance(base, y))
    newton_steps = 0
    if unresolved.size:
        start = np.where(np.isfinite(y[unresolved]), y[unresolved], warm_start[unresolved])
        solved, solved_residual, newton_steps = _newton(velocity, base[unresolved], scale, start, time)
        y[unresolved] = solved
        residual[unresolved] = solved_residual
        failing = np.flatnonzero(residual > _tolerance(base, y))
        if failing.size:
            worst = failing[np.argmax(residual[failing])]
            raise ConvergenceError(
                f"{solver} step {step} (t = {time:.6g}): implicit solve did not converge for "
                f"{failing.size} of {batch} samples; worst residual {residual[worst]:.3e} "
                f"(sample {worst}) > tolerance {_tolerance(base[worst : worst + 1], y[worst : worst + 1])[0]:.1e} "
                f"after {iterations} fixed-point and {newton_steps} Newton iterations"
            )
    return Solve(y, float(residual.max(initial=0.0)), iterations, newton_steps)
