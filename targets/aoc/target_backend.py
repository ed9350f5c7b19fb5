"""The AOC's entries in the backend interface (``admc.targets.backends``): lowering, the realised program
a bundle's images encode, the digital twin for verify and simulate, and the ``admc inspect`` section.

Requires: AOC bundles and compiled programs. Guarantees: each entry delegates to the AOC module that owns
the job; nothing here computes anything of its own.
"""

from __future__ import annotations

import numpy as np

from admc.targets.aoc.manifest_section import AocSection
from admc.targets.aoc.sweep_twin import make_twin
from admc.targets.backends import TargetBackend, TwinRun


def lowering(compiled, layout: str):
    """The nominal lowering's named passes, or those for the measured machine given (``--calibration``)."""
    if compiled.calibration is not None:
        from admc.targets.aoc.calibrated_build import calibrated_lowering

        return calibrated_lowering(compiled, layout, compiled.calibration)
    from admc.targets.aoc.lowering import nominal_lowering

    return nominal_lowering(compiled, layout)


def read_calibration(path):
    from admc.targets.aoc.calibration import read_calibration as read_file

    return read_file(path)


def read_program(bundle):
    from admc.bundle.program_io import read_program as read_spine
    from admc.targets.aoc.bundle_reader import phase_blocks, realised_blocks

    program, schedule, alpha = read_spine(bundle, realised_blocks(bundle))
    program.phase_blocks = phase_blocks(bundle)
    return program, schedule, alpha


def run_twin(bundle, noise: np.ndarray, options, progress=None) -> TwinRun:
    from admc.targets.aoc.twin_cli import run_twin as run_aoc_twin

    return run_aoc_twin(bundle, noise, options, progress)


def simulate(bundle, noise: np.ndarray, options) -> tuple[np.ndarray, str]:
    from admc.targets.aoc.twin_cli import simulate_twin

    return simulate_twin(bundle, noise, options)


def describe(manifest: dict) -> tuple[dict, list[str]]:
    section = manifest.get("aoc", {})
    data = {**section.get("summary", {}), "weight_error": section.get("weight_error", []),
            "headroom": section.get("headroom", [])}
    return {"aoc": data}, list(data.get("lines", []))


def check_files(bundle) -> None:
    from admc.targets.aoc.bundle_reader import check_emitted_files

    check_emitted_files(bundle)


def verify_bound(bundle) -> tuple[str, float]:
    from admc.targets.aoc.emit import verify_bound as bound_for_target

    return bound_for_target(bundle.target)


def differentiable_twin(bundle, block_shapes, seed: int, quantise: bool = True, calibration=None,
                        hold_full_scale: bool = False):
    from admc.targets.aoc.differentiable_twin import DifferentiableTwin

    return DifferentiableTwin(bundle, block_shapes, calibration=calibration, seed=seed, quantise=quantise,
                              hold_full_scale=hold_full_scale)


BACKEND = TargetBackend("aoc", lowering, read_program, run_twin, simulate, describe, check_files, verify_bound,
                        read_calibration, manifest_section=AocSection, make_twin=make_twin,
                        alpha_in_lowering=True, differentiable_twin=differentiable_twin)
