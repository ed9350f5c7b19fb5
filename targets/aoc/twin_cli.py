"""Running the AOC digital twin on a bundle for ``admc simulate`` (without ``--ideal``) and ``admc verify``
(docs/design.md §6).

Requires: an AOC bundle, noise [B, d] in float64 and ``SimulateOptions`` (``admc.runtime.simulate``): seed,
loop budget, measured machine, mode, repeats, non-idealities and the run's conditions and guidance.
Guarantees: the twin is built with the bundle's own non-idealities (or the options'), its gains rescaled
for run-time guidance (``guidance.rescale_gains``), and driven by the conditions' per-sample injections;
same inputs, same samples. ``simulate_twin`` refuses noise of the wrong width with an ``AdmcError`` and
returns the final samples with a one-line account of the run; a loop that diverges or does not settle
raises ``ConvergenceError``.
"""

from __future__ import annotations

import numpy as np
import torch

from admc.bundle.program import check_loaded_files
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.targets.aoc.guidance import rescale_gains
from admc.targets.aoc.twin import AocTwin
from admc.targets.backends import TwinRun


def run_conditioned(bundle: Bundle, noise: np.ndarray, options, progress=None,
                    record_residuals: bool = False) -> tuple[AocTwin, object]:
    """The twin the options describe and its run (a ``TwinResult``) on ``noise`` with the options' conditions
    and guidance."""
    twin = AocTwin(bundle, options.nonidealities, mode=options.mode, loop_iterations=options.loop_iterations,
                   repeats=options.repeats, seed=options.seed, record_residuals=record_residuals,
                   calibration=options.calibration, dtype=getattr(torch, options.precision))
    rescale_gains(twin, bundle, options.conditions)
    return twin, twin.run(noise, progress, options.conditions.drive(twin.program))


def run_twin(bundle: Bundle, noise: np.ndarray, options, progress=None) -> TwinRun:
    """The twin's trajectory, loop residuals and summary for ``admc verify``."""
    _, result = run_conditioned(bundle, noise, options, progress, record_residuals=True)
    return TwinRun(result.trajectory, result.residual_history,
                   {"mode": options.mode, "iterations_step_1": result.iterations[0],
                    "settle_residual_max": float(np.max(result.settle_residuals))})


def simulate_twin(bundle: Bundle, noise: np.ndarray, options) -> tuple[np.ndarray, str]:
    """The twin's final samples [B, d] and a one-line account of the run for ``admc simulate``."""
    dimension = int(bundle.manifest["source"]["state_dimension"])
    if noise.ndim != 2 or noise.shape[1] != dimension:
        raise AdmcError(f"noise has shape {noise.shape}, the bundle's state has {dimension} features")
    check_loaded_files(bundle)
    twin, result = run_conditioned(bundle, noise, options)
    counts = [sum(phases) for phases in result.iterations]
    return result.trajectory[-1], (
        f"twin ({twin.mode}, seed {twin.seed}, {twin.repeats} repeats): {len(result.iterations)} steps, "
        f"loop iterations per step {min(counts, default=0)}–{max(counts, default=0)}, "
        f"max settle residual {float(np.max(result.settle_residuals, initial=0.0)):.2e}")
