"""Δt and solver pass: a solver on a time grid → per-step phases (docs/design.md §1, "A step is a list of phases").

Requires: a strictly increasing grid t_0 < … < t_T and a solver name. Guarantees: every step is a list of
phases whose execution by the loop semantics of ``admc.ir.program`` gives exactly the solver's update:
- explicit Euler: one open phase (scale Δt, time t, inject x, hold x) → x + Δt f(x, t)  (Eq. 9);
- implicit Euler: one closed phase (scale Δt, time t+Δt, inject x, start from x) → y = x + Δt f(y, t+Δt);
- Crank-Nicolson: open half step x̃ = x + Δt/2 f(x, t), then a closed phase at t+Δt with scale Δt/2
  injecting x̃, started from the explicit-Euler warm start 2x̃ − x;
- Heun: y₁ = x + Δt f(x, t) (open), then an open phase at t+Δt with scale Δt/2 injecting (x + y₁)/2 and
  holding y₁, which equals x + Δt/2 (f(x, t) + f(y₁, t+Δt)).
With ``fp_iterations = N`` the implicit solvers instead do the paper's counting: an explicit-Euler warm
start then N − 1 open phases, each holding the previous iterate (so Crank-Nicolson with N = 2 is Heun).
Δt never enters a weight: it is each phase's ``step_scale``, applied by gains (one image set per program).
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import CLOSED, OPEN, Phase, Schedule
from admc.passes.continuous_time import CONTINUOUS, continuous_phases
from admc.passes.solvers import IMPLICIT_SOLVERS, SOLVER_ALIASES, SOLVERS, solver_name

__all__ = ["SOLVERS", "SOLVER_ALIASES", "build_schedule", "solver_name"]


def _step_phases(solver: str, time: float, delta: float, fp_iterations: int | None) -> list[Phase]:
    later = time + delta
    x = (("x", 1.0),)
    euler = Phase(OPEN, delta, time, x, x)
    if solver == CONTINUOUS:
        return continuous_phases(time, delta)
    if solver == "explicit-euler":
        return [euler]
    if solver == "heun":
        return [euler, Phase(OPEN, delta / 2, later, (("x", 0.5), ("phase:0", 0.5)), (("phase:0", 1.0),))]
    if fp_iterations is None:
        if solver == "implicit-euler":
            return [Phase(CLOSED, delta, later, x, init=x)]
        half = Phase(OPEN, delta / 2, time, x, x)
        return [half, Phase(CLOSED, delta / 2, later, (("phase:0", 1.0),),
                            init=(("phase:0", 2.0), ("x", -1.0)))]
    phases = [euler]
    for iteration in range(1, fp_iterations):
        hold = ((f"phase:{iteration - 1}", 1.0),)
        if solver == "implicit-euler":
            phases.append(Phase(OPEN, delta, later, x, hold))
        else:
            # x̃ = (x + y₁)/2 with y₁ the warm start (phase 0): no extra half step is needed.
            phases.append(Phase(OPEN, delta / 2, later, (("x", 0.5), ("phase:0", 0.5)), hold))
    return phases


def build_schedule(solver: str, grid: np.ndarray, fp_iterations: int | None = None) -> Schedule:
    solver = solver_name(solver)
    if fp_iterations is not None:
        if solver not in IMPLICIT_SOLVERS:
            raise AdmcError(f"--fp-iterations applies to implicit-euler and crank-nicolson, not {solver}")
        if fp_iterations < 1:
            raise AdmcError(f"--fp-iterations must be at least 1, got {fp_iterations}")
    grid = np.asarray(grid, dtype=np.float64)
    steps = [
        _step_phases(solver, float(grid[index]), float(grid[index + 1] - grid[index]), fp_iterations)
        for index in range(len(grid) - 1)
    ]
    return Schedule(solver, grid, steps, fp_iterations)
