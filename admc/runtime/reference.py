"""The reference executor: the source model's velocity integrated by the ODE solvers in float64.

Requires: a velocity function f(x [B, d], t [B]) -> [B, d] (a ``Velocity`` from ``admc.runtime.source_model`` or any
callable; one with a ``jacobian(x, t) -> [B, d, d]`` method gets exact Newton steps), a grid t_0 < ... < t_T
and noise x_0 [B, d]. Step n goes from t = t_n to t' = t_{n+1} with Δt = t' − t:
- explicit Euler:   x + Δt f(x, t)
- Heun:             x̃ = x + Δt f(x, t);  x + Δt/2 (f(x, t) + f(x̃, t'))
- implicit Euler:   y = x + Δt f(y, t')
- Crank-Nicolson:   y = x̃ + Δt/2 f(y, t') with x̃ = x + Δt/2 f(x, t)
- continuous:       the flow itself, by an adaptive 8th-order solver (DOP853, rtol = atol = 1e-10; see
                    ``admc.runtime.continuous``), read at the grid points: the "exact" sample
Guarantees: by default each implicit equation y = base + c f(y, t') is solved until the max-abs residual
y − base − c f(y, t') of every sample is ≤ 1e-12 · max(1, max|base|, max|y|) (the scale keeps the target
above float64 rounding of the residual itself), and past that target for as long as an iteration still halves
the residual (the error in y is the residual amplified by ‖(I − c J)⁻¹‖, so stopping right at the target
would leave ~1e-11 errors): fixed-point iteration warm-started from explicit Euler, then, for samples where
it does not contract within its budget, damped Newton with the velocity's Jacobian (or a central
finite-difference one). A sample that still misses the target raises ``ConvergenceError`` naming the step,
the time and the residual. With ``fp_iterations=N`` exactly N fixed-point iterations are run, counting the
explicit Euler warm start y₁ = x + Δt f(x, t) as the first (the paper's counting: N = 1 is explicit Euler,
Crank-Nicolson with N = 2 is Heun); the residual of the last iterate is reported, not enforced. A state that
becomes non-finite raises ``ConvergenceError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.core.schedule import time_grid
from admc.passes.solvers import IMPLICIT_SOLVERS, solver_name

VelocityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


RELATIVE_TOLERANCE = 1e-12
# About 4 ulp: below this a residual is rounding noise, so polishing stops.
RELATIVE_FLOOR = 1e-15
FIXED_POINT_BUDGET = 200
NEWTON_BUDGET = 50


# One solver table for every command (passes/solvers.py).
canonical_solver = solver_name


@dataclass
class ReferenceResult:
    """A reference run. ``residuals[n]`` is the max-abs implicit residual of step n (0 for explicit steps);
    ``function_evaluations`` counts batched calls of f made by the solver (Jacobians by finite differences
    count their calls; the diagnostic residual of a fixed-iteration run is not counted)."""

    solver: str
    grid: np.ndarray
    trajectory: np.ndarray
    residuals: np.ndarray
    function_evaluations: int
    fp_iterations: int | None = None
    fixed_point_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    newton_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def samples(self) -> np.ndarray:
        """The final state x_T, [B, d]."""
        return self.trajectory[-1]


class _CountingVelocity:
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


def _finite_difference_jacobian(velocity: _CountingVelocity, y: np.ndarray, t: np.ndarray) -> np.ndarray:
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
class _Solve:
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
    velocity: _CountingVelocity,
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
    velocity: _CountingVelocity,
    base: np.ndarray,
    scale: float,
    warm_start: np.ndarray,
    time: float,
    step: int,
    solver: str,
) -> _Solve:
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
    return _Solve(y, float(residual.max(initial=0.0)), iterations, newton_steps)


def _check_finite(state: np.ndarray, solver: str, step: int, time: float) -> None:
    if not np.all(np.isfinite(state)):
        bad = int(np.sum(~np.all(np.isfinite(state), axis=1)))
        raise ConvergenceError(
            f"{solver} step {step} (t = {time:.6g}): the state became non-finite in {bad} samples (diverged)"
        )


def integrate(
    velocity: VelocityFunction,
    noise: np.ndarray,
    solver: str,
    grid: np.ndarray,
    fp_iterations: int | None = None,
) -> ReferenceResult:
    """Integrate dx/dt = f(x, t) from ``noise`` at grid[0] through ``grid`` with ``solver``."""
    solver = canonical_solver(solver)
    if fp_iterations is not None:
        if solver not in IMPLICIT_SOLVERS:
            implicit = ", ".join(IMPLICIT_SOLVERS)
            raise AdmcError(f"fp_iterations applies to implicit solvers ({implicit}), not {solver}")
        integral = isinstance(fp_iterations, (int, np.integer)) and not isinstance(fp_iterations, bool)
        if not integral or fp_iterations < 1:
            raise AdmcError(f"fp_iterations must be a positive integer, got {fp_iterations!r}")
    counting = _CountingVelocity(velocity)
    state = np.array(noise, dtype=np.float64)
    batch = state.shape[0]
    steps = grid.size - 1
    if solver == "continuous":
        from admc.runtime.continuous import integrate_continuous

        trajectory, evaluations = integrate_continuous(counting, state, grid)
        return ReferenceResult(solver=solver, grid=grid, trajectory=trajectory, residuals=np.zeros(steps),
                               function_evaluations=evaluations)
    trajectory = np.empty((steps + 1, *state.shape))
    trajectory[0] = state
    residuals = np.zeros(steps)
    fixed_point_iterations = np.zeros(steps, dtype=np.int64)
    newton_iterations = np.zeros(steps, dtype=np.int64)
    for step in range(steps):
        time, next_time = float(grid[step]), float(grid[step + 1])
        delta = next_time - time
        now, later = np.full(batch, time), np.full(batch, next_time)
        slope = counting(state, now)
        euler = state + delta * slope
        if solver == "explicit-euler":
            state = euler
        elif solver == "heun":
            state = state + 0.5 * delta * (slope + counting(euler, later))
        else:
            if solver == "implicit-euler":
                base, scale = state, delta
            else:
                base, scale = state + 0.5 * delta * slope, 0.5 * delta
            if fp_iterations is None:
                solved = solve_implicit(counting, base, scale, euler, next_time, step, solver)
                state = solved.y
                residuals[step] = solved.residual
                fixed_point_iterations[step] = solved.fixed_point_iterations
                newton_iterations[step] = solved.newton_iterations
            else:
                y = euler  # the warm start is iteration 1 of N
                for _ in range(int(fp_iterations) - 1):
                    y = base + scale * counting(y, later)
                _check_finite(y, solver, step, next_time)
                residuals[step] = float(np.max(np.abs(y - base - scale * velocity(y, later))))
                fixed_point_iterations[step] = int(fp_iterations)
                state = y
        _check_finite(state, solver, step, next_time)
        trajectory[step + 1] = state
    return ReferenceResult(
        solver=solver,
        grid=grid,
        trajectory=trajectory,
        residuals=residuals,
        function_evaluations=counting.evaluations,
        fp_iterations=None if fp_iterations is None else int(fp_iterations),
        fixed_point_iterations=fixed_point_iterations,
        newton_iterations=newton_iterations,
    )


def run_reference(
    model: object,
    noise: np.ndarray,
    solver: str,
    grid: int | Sequence[float] | np.ndarray,
    fp_iterations: int | None = None,
    time_input: str | None = None,
) -> ReferenceResult:
    """Run the source ``model`` (path, module, exported program, ``Velocity`` or plain f(x, t) callable) from
    ``noise`` [B, d] over ``grid`` (a number of uniform steps or explicit time points) with ``solver``."""
    # Imported here so that integrating a plain numpy f(x, t) never loads torch or onnxruntime.
    import torch

    from admc.runtime.source_model import Velocity, make_velocity

    solver = canonical_solver(solver)
    if isinstance(model, Velocity):
        velocity: VelocityFunction = model
        signature = model.signature
    elif isinstance(model, (str, Path, torch.nn.Module, torch.export.ExportedProgram)):
        velocity = make_velocity(model, time_input=time_input)
        signature = velocity.signature
    elif callable(model):
        velocity = model
        signature = None
    else:
        raise AdmcError(f"cannot run a {type(model).__name__} as a model; give a path, a module or f(x, t)")
    times = time_grid(steps=int(grid)) if isinstance(grid, (int, np.integer)) else time_grid(grid=grid)
    state = np.asarray(noise, dtype=np.float64)
    if state.ndim != 2 or state.shape[0] == 0:
        raise AdmcError(f"noise must be a non-empty [B, d] array, got shape {state.shape}")
    if not np.all(np.isfinite(state)):
        raise AdmcError("noise contains NaN or Inf")
    if signature is not None and state.shape[1] != signature.state_dimension:
        raise AdmcError(
            f"noise has {state.shape[1]} features; the model's state input '{signature.state_input}' "
            f"has {signature.state_dimension}"
        )
    return integrate(velocity, state, solver, times, fp_iterations)
