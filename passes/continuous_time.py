"""Continuous-time solving: the ``continuous`` solver's schedule and the times its time terms are tabulated at.

Requires: a grid t_0 < … < t_T. Guarantees: a continuous schedule has one phase per grid interval with loop
``continuous``: the flow dx/dt = f(x, t) is integrated over [t_n, t_{n+1}] (by an analog integrator, or an
adaptive solver in the executors) and the grid points are where the trajectory is read. Δt enters no weight.
Time terms of a continuous program are tabulated densely (``DENSE_POINTS_PER_UNIT`` per unit of model
time, plus the grid) so executors can interpolate them at any time; a target may re-tabulate them at its
DAC's rate. Discrete solvers tabulate at their phases' times only.
"""

from __future__ import annotations

import numpy as np

from admc.ir.program import Phase, Schedule

CONTINUOUS = "continuous"
DISCRETE = "discrete"
# Cubic interpolation of a time table with 4096 points per unit time errs by ~(1/4096)^4 · max|d⁴g/dt⁴| / 384:
# below 1e-12 for time features with frequencies up to ~50 rad per unit time.
DENSE_POINTS_PER_UNIT = 4096


def solver_kind(solver: str) -> str:
    """``continuous`` for the continuous solver, ``discrete`` for the step-by-step ones."""
    return CONTINUOUS if solver == CONTINUOUS else DISCRETE


def continuous_phases(time: float, delta: float) -> list[Phase]:
    return [Phase(CONTINUOUS, delta, time, (("x", 1.0),))]


def dense_times(start: float, stop: float, points_per_unit: float = DENSE_POINTS_PER_UNIT) -> np.ndarray:
    count = max(2, int(np.ceil((stop - start) * points_per_unit)) + 1)
    return np.linspace(start, stop, count)


def tabulation_times(schedule: Schedule) -> np.ndarray:
    """The times at which a program's time terms are evaluated for ``schedule``."""
    if schedule.solver == CONTINUOUS:
        grid = np.asarray(schedule.grid, dtype=np.float64)
        return np.union1d(dense_times(float(grid[0]), float(grid[-1])), grid)
    return np.asarray([phase.time for phases in schedule.steps for phase in phases], dtype=np.float64)
