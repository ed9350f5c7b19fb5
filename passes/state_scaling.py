"""State-scaling pass: choose a voltage scale per state group so measured signals fit the target's range.

Requires: a ``BlockProgram`` with its static injection table, a schedule, and the target's state voltage
limit, injection clip and σ gain range. Guarantees: each group g gets ``voltage_scale`` c_g and
``sigma_gain`` 1/c_g; every block writing g is multiplied by c_g, and so are g's static injections and
injection matrices. Because σ reads ``sigma_gain × voltage`` the program computes exactly the same values
(an exact pass, up to rounding). c_g is the largest scale, within the σ gain range, keeping the peak |state|
seen on seeded calibration samples (all loop iterations, ideal execution) and the peak injected voltage
under ``headroom`` × their limits; the report gives the achieved headroom per group.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from admc.ir.program import BlockProgram, InjectionPart, MatrixBlock, Schedule, StaticInjection
from admc.runtime.executor import IdealExecutor, float32_products_for, samples_within_work

HEADROOM = 0.8
CALIBRATION_SAMPLES = 256
CALIBRATION_SEED = 0
# Peaks need percent accuracy, not the executor's 1e-13 convergence.
CALIBRATION_TOLERANCE = 1e-6
# Work of the calibration run in weight-samples: 256 samples up to 65,536 weights, fewer above, 16 from 1M
# weights on. A group's scale comes from its peak over channels × samples × iterations, so a group of
# thousands of channels is measured well by a few samples, and the run's cost stops growing as weights ×
# samples (issue 25).
CALIBRATION_WORK = CALIBRATION_SAMPLES << 16
CALIBRATION_MIN_SAMPLES = 16


def calibration_samples(program: BlockProgram) -> int:
    """How many calibration samples ``program`` gets (CALIBRATION_WORK over its weight count, clipped)."""
    return samples_within_work(program, CALIBRATION_WORK, CALIBRATION_MIN_SAMPLES, CALIBRATION_SAMPLES)


@dataclass(frozen=True)
class CalibrationPeaks:
    """The peaks of a calibration run already made (``measure_peaks``), with the α and sample count it ran."""

    alpha: np.ndarray
    samples: int
    state_peak: np.ndarray
    drive_peak: np.ndarray
    # The run's closed loops (``alpha_probe.ProbeRecorder``): where each started, its drive and fixed point.
    probes: list | None = None

    def measured(self, alpha: np.ndarray, samples: int) -> bool:
        """Whether this run is the one ``measure_peaks`` would make with ``alpha`` on ``samples`` samples."""
        return self.samples == samples and self.alpha.shape == np.shape(alpha) and np.array_equal(self.alpha, alpha)


def measure_peaks(program: BlockProgram, schedule: Schedule, alpha: np.ndarray,
                  samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED,
                  extra_drive=None, max_iterations: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel peak |state| and |injected drive| on seeded Gaussian noise (ideal execution);
    ``extra_drive`` is the samples' per-phase conditioning drive for conditional programs; ``max_iterations``
    (default: the executor's) bounds each loop, beyond which the executor's ``ConvergenceError`` is raised."""
    executor = calibration_run(program, schedule, alpha, samples, seed, extra_drive, max_iterations)
    return executor.state_peak, executor.drive_peak


def calibration_run(program: BlockProgram, schedule: Schedule, alpha: np.ndarray,
                    samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED, extra_drive=None,
                    max_iterations: int | None = None, executor_type: type = IdealExecutor,
                    stall_window: int | None = None) -> IdealExecutor:
    """The executor (``executor_type``: the ideal one, or a subclass that records more) after ``measure_peaks``'s
    run: its ``state_peak`` and ``drive_peak``, and whatever the subclass recorded. ``stall_window``: the
    executor's (give up on a loop that stops progressing)."""
    noise = np.random.default_rng(seed).standard_normal((samples, program.state_dimension))
    limits = {} if max_iterations is None else {"max_iterations": max_iterations}
    executor = executor_type(program, alpha, tolerance=CALIBRATION_TOLERANCE, record_peaks=True,
                             float32_products=float32_products_for(program, CALIBRATION_TOLERANCE),
                             stall_window=stall_window, **limits)
    executor.run(schedule, noise, extra_drive)
    return executor


def choose_scales(program: BlockProgram, state_peak: np.ndarray, drive_peak: np.ndarray, voltage_limit: float,
                  injection_limit: float, sigma_gain_min: float, sigma_gain_max: float) -> dict[str, float]:
    scales = {}
    for group in program.groups:
        channels = slice(group.offset, group.stop)
        state = float(np.max(state_peak[channels], initial=0.0))
        drive = float(np.max(drive_peak[channels], initial=0.0))
        bounds = [1.0 / sigma_gain_min]
        if state > 0:
            bounds.append(HEADROOM * voltage_limit / state)
        if drive > 0:
            bounds.append(HEADROOM * injection_limit / drive)
        scales[group.name] = float(max(min(bounds), 1.0 / sigma_gain_max))
    return scales


def apply_scales(program: BlockProgram, scales: dict[str, float]) -> BlockProgram:
    row_factor = np.ones(program.size)
    for group in program.groups:
        row_factor[group.offset:group.stop] = scales[group.name]
    groups = [replace(group, voltage_scale=scales[group.name], sigma_gain=1.0 / scales[group.name])
              for group in program.groups]
    blocks = [MatrixBlock(block.row_group, block.column_group, scales[block.row_group] * block.matrix,
                          block.scale_class, block.layer,
                          None if block.low_rank is None else (scales[block.row_group] * block.low_rank[0],
                                                               block.low_rank[1]))
              for block in program.blocks]
    injections = [InjectionPart(part.group, scales[part.group] * part.matrix, part.kind)
                  for part in program.injections]
    table = program.static_table
    static = StaticInjection(table.times, {name: row_factor * vector for name, vector in table.constants.items()},
                             {name: row_factor * matrix for name, matrix in table.time_tables.items()})
    return replace(program, groups=groups, blocks=blocks, injections=injections, static_table=static)


def headroom_report(program: BlockProgram, scales: dict[str, float], state_peak: np.ndarray,
                    drive_peak: np.ndarray, voltage_limit: float, injection_limit: float) -> list[dict]:
    report = []
    for group in program.groups:
        channels = slice(group.offset, group.stop)
        scale = scales[group.name]
        state = scale * float(np.max(state_peak[channels], initial=0.0))
        drive = scale * float(np.max(drive_peak[channels], initial=0.0))
        report.append({
            "group": group.name, "voltage_scale": scale, "sigma_gain": 1.0 / scale,
            "peak_voltage": state, "peak_injection": drive,
            "voltage_headroom": voltage_limit / state if state else None,
            "injection_headroom": injection_limit / drive if drive else None,
        })
    return report
