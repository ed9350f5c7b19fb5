"""The reference executor: the source model run as given, integrated by the ODE solvers in float64, for
per-sample conditions (none for an unconditional model) and classifier-free guidance.

Requires: a velocity function f(x [B, d], t [B][, conditions]) -> [B, d] (a ``Velocity`` from
``admc.runtime.source_model`` or any f(x, t) callable; one with a ``jacobian(x, t) -> [B, d, d]`` method gets
exact Newton steps), a grid t_0 < ... < t_T and noise x_0 [B, d]. Step n goes from t = t_n to t' = t_{n+1}
with Δt = t' − t:
- explicit Euler:   x + Δt f(x, t)
- Heun:             x̃ = x + Δt f(x, t);  x + Δt/2 (f(x, t) + f(x̃, t'))
- implicit Euler:   y = x + Δt f(y, t')
- Crank-Nicolson:   y = x̃ + Δt/2 f(y, t') with x̃ = x + Δt/2 f(x, t)
- continuous:       the flow itself, by an adaptive 8th-order solver (DOP853, rtol = atol = 1e-10; see
                    ``admc.runtime.continuous``), read at the grid points: the "exact" sample
Guarantees: by default each implicit equation is solved to a tight per-sample tolerance
(``admc.runtime.implicit_solve``); a sample that misses it raises ``ConvergenceError`` naming the step, the
time and the residual. With ``fp_iterations=N`` exactly N fixed-point iterations are run, counting the
explicit Euler warm start y₁ = x + Δt f(x, t) as the first (the paper's counting: N = 1 is explicit Euler,
Crank-Nicolson with N = 2 is Heun); the residual of the last iterate is reported, not enforced. A state that
becomes non-finite raises ``ConvergenceError``.

Conditions: samples are grouped by identical conditions (one group holding every sample when there are
none) and each group is integrated with f(x, t) = model(x, t, c) or, guided,
(1 + W)·model(x, t, c) − W·model(x, t, ∅); samples are independent under every solver (per-sample stopping
rules), so the assembled result equals one batched run, and with no conditions it is exactly
``integrate(model, ...)``. The result's residuals and iteration counts are the worst over the groups, its
evaluation count their sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.core.schedule import time_grid
from admc.passes.solvers import IMPLICIT_SOLVERS, solver_name
from admc.runtime.condition_options import check_guidance_options, parse_condition_options
from admc.runtime.conditioning import ConditioningInterface
from admc.runtime.implicit_solve import CountingVelocity, solve_implicit

VelocityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


def _check_finite(state: np.ndarray, solver: str, step: int, time: float) -> None:
    if not np.all(np.isfinite(state)):
        bad = int(np.sum(~np.all(np.isfinite(state), axis=1)))
        raise ConvergenceError(
            f"{solver} step {step} (t = {time:.6g}): the state became non-finite in {bad} samples (diverged)"
        )


def _check_fp_iterations(solver: str, fp_iterations: int | None) -> None:
    if fp_iterations is None:
        return
    if solver not in IMPLICIT_SOLVERS:
        raise AdmcError(f"fp_iterations applies to implicit solvers ({', '.join(IMPLICIT_SOLVERS)}), not {solver}")
    integral = isinstance(fp_iterations, (int, np.integer)) and not isinstance(fp_iterations, bool)
    if not integral or fp_iterations < 1:
        raise AdmcError(f"fp_iterations must be a positive integer, got {fp_iterations!r}")


@dataclass
class _Step:
    """One step's new state, its implicit residual and its fixed-point and Newton iteration counts."""

    state: np.ndarray
    residual: float = 0.0
    fixed_point_iterations: int = 0
    newton_iterations: int = 0


def _step(counting: CountingVelocity, state: np.ndarray, solver: str, time: float, next_time: float, step: int,
          fp_iterations: int | None) -> _Step:
    batch = state.shape[0]
    delta = next_time - time
    later = np.full(batch, next_time)
    slope = counting(state, np.full(batch, time))
    euler = state + delta * slope
    if solver == "explicit-euler":
        return _Step(euler)
    if solver == "heun":
        return _Step(state + 0.5 * delta * (slope + counting(euler, later)))
    if solver == "implicit-euler":
        base, scale = state, delta
    else:
        base, scale = state + 0.5 * delta * slope, 0.5 * delta
    if fp_iterations is None:
        solved = solve_implicit(counting, base, scale, euler, next_time, step, solver)
        return _Step(solved.y, solved.residual, solved.fixed_point_iterations, solved.newton_iterations)
    y = euler  # the warm start is iteration 1 of N
    for _ in range(int(fp_iterations) - 1):
        y = base + scale * counting(y, later)
    _check_finite(y, solver, step, next_time)
    # The diagnostic residual is not one of the solver's evaluations.
    residual = float(np.max(np.abs(y - base - scale * counting.velocity(y, later))))
    return _Step(y, residual, int(fp_iterations))


def integrate(
    velocity: VelocityFunction,
    noise: np.ndarray,
    solver: str,
    grid: np.ndarray,
    fp_iterations: int | None = None,
) -> ReferenceResult:
    """Integrate dx/dt = f(x, t) from ``noise`` at grid[0] through ``grid`` with ``solver``."""
    solver = canonical_solver(solver)
    _check_fp_iterations(solver, fp_iterations)
    counting = CountingVelocity(velocity)
    state = np.array(noise, dtype=np.float64)
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
        taken = _step(counting, state, solver, float(grid[step]), float(grid[step + 1]), step, fp_iterations)
        state = taken.state
        residuals[step] = taken.residual
        fixed_point_iterations[step] = taken.fixed_point_iterations
        newton_iterations[step] = taken.newton_iterations
        _check_finite(state, solver, step, float(grid[step + 1]))
        trajectory[step + 1] = state
    return ReferenceResult(solver=solver, grid=grid, trajectory=trajectory, residuals=residuals,
                           function_evaluations=counting.evaluations,
                           fp_iterations=None if fp_iterations is None else int(fp_iterations),
                           fixed_point_iterations=fixed_point_iterations, newton_iterations=newton_iterations)


class _FixedCondition:
    """f(x, t[, conditions]) with one more condition input fixed to one value for every sample."""

    def __init__(self, velocity: Callable, name: str, value: np.ndarray) -> None:
        self.velocity, self.name, self.value = velocity, name, np.asarray(value)

    def __call__(self, x: np.ndarray, t: np.ndarray, conditions: dict | None = None) -> np.ndarray:
        fixed = np.repeat(self.value[None], x.shape[0], axis=0)
        return self.velocity(x, t, {**(conditions or {}), self.name: fixed})


def fixed_conditions(velocity: Callable, row: dict[str, np.ndarray]) -> Callable:
    """f(x, t) = velocity(x, t, row for every sample): one condition fixed at a time, so with no condition to
    fix it is the velocity itself (an unconditional model keeps its exact Jacobian)."""
    return reduce(lambda function, item: _FixedCondition(function, *item), row.items(), velocity)


def condition_velocity(velocity: Callable, row: dict[str, np.ndarray], guidance: float | None = None,
                       null_conditions: dict[str, np.ndarray] | None = None) -> Callable:
    """f(x, t) for one condition value (the same for every sample of the batch), guided with weight W by
    (1 + W)·f(x, t, c) − W·f(x, t, ∅) when ``guidance`` is given."""
    conditioned = fixed_conditions(velocity, row)
    if guidance is None:
        return conditioned
    unconditional = fixed_conditions(velocity, {**row, **(null_conditions or {})})

    def guided(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (1.0 + guidance) * conditioned(x, t) - guidance * unconditional(x, t)

    return guided


def integrate_by_condition(velocity: Callable, noise: np.ndarray, conditions: dict[str, np.ndarray], solver: str,
                           grid: np.ndarray, fp_iterations: int | None = None, guidance: float | None = None,
                           null_conditions: dict[str, np.ndarray] | None = None) -> ReferenceResult:
    """``integrate`` per group of samples with identical (checked) ``conditions``, assembled (module docstring)."""
    noise = np.asarray(noise, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    names = sorted(conditions)
    groups: dict[bytes, list[int]] = {}
    for index in range(noise.shape[0]):
        key = b"".join(np.ascontiguousarray(conditions[name][index]).tobytes() for name in names)
        groups.setdefault(key, []).append(index)
    trajectory = np.empty((grid.size, *noise.shape))
    results = []
    for rows in groups.values():
        function = condition_velocity(velocity, {name: conditions[name][rows[0]] for name in names}, guidance,
                                      null_conditions)
        result = integrate(function, noise[rows], solver, grid, fp_iterations)
        trajectory[:, rows] = result.trajectory
        results.append(result)
    return ReferenceResult(results[0].solver, grid, trajectory,
                           reduce(np.maximum, [result.residuals for result in results]),
                           sum(result.function_evaluations for result in results), results[0].fp_iterations,
                           reduce(np.maximum, [result.fixed_point_iterations for result in results]),
                           reduce(np.maximum, [result.newton_iterations for result in results]))


def _velocity(model: object, time_input: str | None, condition_inputs: tuple[str, ...]):
    # Imported here so that integrating a plain numpy f(x, t) never loads torch or onnxruntime.
    import torch

    from admc.runtime.source_model import Velocity, make_velocity

    if isinstance(model, Velocity):
        return model, model.signature
    if isinstance(model, (str, Path, torch.nn.Module, torch.export.ExportedProgram)):
        velocity = make_velocity(model, time_input=time_input, condition_inputs=condition_inputs)
        return velocity, velocity.signature
    if callable(model):
        return model, None
    raise AdmcError(f"cannot run a {type(model).__name__} as a model; give a path, a module or f(x, t)")


def run_reference(
    model: object,
    noise: np.ndarray,
    solver: str,
    grid: int | Sequence[float] | np.ndarray,
    fp_iterations: int | None = None,
    time_input: str | None = None,
    conditions: dict[str, np.ndarray] | None = None,
    guidance: float | None = None,
    null_conditions: dict | list[str] | None = None,
    condition_inputs: tuple[str, ...] = (),
) -> ReferenceResult:
    """Run the source ``model`` (path, module, exported program, ``Velocity`` or plain f(x, t) callable) from
    ``noise`` [B, d] over ``grid`` (a number of uniform steps or explicit time points) with ``solver``, for
    per-sample ``conditions`` (``name → [B, ...]``; ``condition_inputs`` names further condition inputs),
    guided with weight ``guidance`` W against ``null_conditions`` (``{name: value}`` or ``["NAME=VALUE"]``)."""
    names = tuple(dict.fromkeys((*condition_inputs, *(conditions or {}))))
    velocity, signature = _velocity(model, time_input, names)
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
    inputs = signature.conditions if signature is not None else ()
    checked = ConditioningInterface(inputs).check(conditions or {}, state.shape[0])
    null, _ = parse_condition_options(inputs, null_conditions, None)
    check_guidance_options(inputs, guidance, null, getattr(velocity, "source", "the model"))
    return integrate_by_condition(velocity, state, checked, canonical_solver(solver), times, fp_iterations,
                                  guidance, null)
