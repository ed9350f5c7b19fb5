"""``admc simulate BUNDLE`` without ``--ideal``: run the AOC digital twin on a bundle (docs/design.md §6).

Requires: an AOC bundle, noise [B, d] in float64, and parsed arguments with ``seed`` (int),
``loop_iterations`` (int or None) and optionally ``calibration`` (a calibration file of a measured machine).
Guarantees: returns the twin's final samples [B, d] for the bundle's own
non-idealities with that seed; same inputs, same samples. Refuses a non-AOC bundle or noise of the wrong
width with an ``AdmcError``; a loop that diverges or does not settle raises ``ConvergenceError``.
"""

from __future__ import annotations

import argparse

import numpy as np

from admc.bundle.program import check_loaded_files
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.targets.aoc.calibration import read_calibration
from admc.targets.aoc.twin import AocTwin


def simulate_twin(bundle: Bundle, noise: np.ndarray, arguments: argparse.Namespace) -> np.ndarray:
    target = bundle.manifest.get("target", {})
    if target.get("kind") != "aoc":
        raise AdmcError(f"{bundle.path}: the digital twin runs AOC bundles; this one targets "
                        f"{target.get('name', '?')!r} (use --ideal)")
    dimension = int(bundle.manifest["source"]["state_dimension"])
    if noise.ndim != 2 or noise.shape[1] != dimension:
        raise AdmcError(f"noise has shape {noise.shape}, the bundle's state has {dimension} features")
    check_loaded_files(bundle)
    calibration = getattr(arguments, "calibration", None)
    twin = AocTwin(bundle, seed=arguments.seed, loop_iterations=arguments.loop_iterations,
                   calibration=read_calibration(calibration) if calibration else None)
    result = twin.run(noise)
    counts = [sum(phases) for phases in result.iterations]
    print(f"twin ({twin.mode}, seed {twin.seed}, {twin.repeats} repeats): {len(result.iterations)} steps, "
          f"loop iterations per step {min(counts, default=0)}–{max(counts, default=0)}, "
          f"max settle residual {float(np.max(result.settle_residuals, initial=0.0)):.2e}")
    return result.trajectory[-1]
