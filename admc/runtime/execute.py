"""The ideal execution of a program for its schedule: which executor runs which kind of solver.

Requires: a ``BlockProgram`` with its static table, a ``Schedule``, channel α and noise [B, d].
Guarantees: discrete solvers run on the loop executor (``admc.runtime.executor``), the ``continuous`` solver on the
adaptive continuous-time integration (``admc.runtime.continuous``); both return an ``ExecutionResult`` whose
trajectory holds the state at the schedule's grid points.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import BlockProgram, Schedule
from admc.passes.continuous_time import CONTINUOUS, solver_kind
from admc.runtime.continuous import run_program_continuous
from admc.runtime.executor import ExecutionResult, IdealExecutor


def run_ideal(program: BlockProgram, schedule: Schedule, alpha: np.ndarray | None, noise: np.ndarray,
              drive=None, **options) -> ExecutionResult:
    """``drive``: a conditional program's per-sample injection (``phase -> [B, n]``), or None; ``options`` are
    the loop executor's (tolerance, loop_iterations, record_residuals...)."""
    if solver_kind(schedule.solver) == CONTINUOUS:
        if drive is not None:
            raise AdmcError("conditional programs run on discrete-time solvers only (the continuous executor "
                            "has no per-sample condition drive)")
        return ExecutionResult(run_program_continuous(program, schedule.grid, noise))
    return IdealExecutor(program, alpha, **options).run(schedule, noise, drive)
