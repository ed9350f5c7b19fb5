"""The settling α and the state-scaling calibration run, made as one run of the program's loops.

Requires: a program with its static injection table, its schedule, the target's α capabilities and the
conditioning drive of the calibration samples (``admc.compiler.calibration_drive``; None for an unconditional
program). Guarantees: the first of ``settling_tables`` whose loops settle, within the α pass's iteration limit, on
the state-scaling calibration samples (``calibration_samples`` of them, its seed and tolerance), with the peaks that
very run measured (``CalibrationPeaks``: what ``measure_peaks`` returns for that table, bit for bit) and its closed
loops (``ProbeRecorder``: start, drive and fixed point of each, which the α pass's judge and linearisations need and
which do not depend on α); the last table and no peaks when none settles (the backend's own calibration run then
reports the loop that does not settle).

Why one run: a backend that chooses α in its lowering needs a settling α only for its calibration run. Checking the
α on samples of its own first ran every loop of the program once more (7.5 of the 87 s of a 36M-weight build), and
the α pass ran them once more again to record its probes.
"""

from __future__ import annotations

import numpy as np

from admc.ir.program import BlockProgram, Schedule
from admc.passes.alpha_probe import ProbeRecorder
from admc.passes.alpha_selection import LINEARISATION_MAX_ITERATIONS, AlphaCapabilities, settling_tables
from admc.passes.state_scaling import CalibrationPeaks, calibration_run, calibration_samples
from admc.runtime.executor import first_settled


def settle_and_calibrate(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities,
                         drive=None) -> tuple[np.ndarray, CalibrationPeaks | None]:
    """The settling α table and the calibration peaks measured with it (None when no table settles)."""
    samples = calibration_samples(program)
    tables = settling_tables(program, schedule, capabilities)
    found = first_settled(tables, lambda table, stall_window: calibration_run(
        program, schedule, table, samples=samples, extra_drive=drive, max_iterations=LINEARISATION_MAX_ITERATIONS,
        executor_type=ProbeRecorder, stall_window=stall_window))
    if found is None:
        return tables[-1], None
    table, run = found
    return table, CalibrationPeaks(table, samples, run.state_peak, run.drive_peak, run.probes)
