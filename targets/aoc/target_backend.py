"""The AOC's entries in the backend interface (``admc.targets.backends``): lowering, the realised program
a bundle's images encode, the digital twin for verify and simulate, and the ``admc inspect`` section.

Requires: AOC bundles and compiled programs. Guarantees: each entry delegates to the AOC module that owns
the job; nothing here computes anything of its own.
"""

from __future__ import annotations

import numpy as np

from admc.targets.backends import TargetBackend, TwinRun


def lower(compiled, layout: str):
    from admc.targets.aoc.backend import lower_to_aoc

    return lower_to_aoc(compiled, layout, compiled.calibration)


def read_calibration(path):
    from admc.targets.aoc.calibration import read_calibration as read_file

    return read_file(path)


def read_program(bundle):
    from admc.bundle.program_io import read_program as read_spine
    from admc.targets.aoc.bundle_reader import phase_blocks, realised_blocks

    program, schedule, alpha = read_spine(bundle, realised_blocks(bundle))
    program.phase_blocks = phase_blocks(bundle)
    return program, schedule, alpha


def run_twin(bundle, noise: np.ndarray, options: dict, progress=None) -> TwinRun:
    from admc.targets.aoc.twin import AocTwin

    options = dict(options)
    conditioning = options.pop("conditioning", None)  # a conditional program's drawn conditions (verify)
    twin = AocTwin(bundle, record_residuals=True, **options)
    drive = None if conditioning is None else conditioning.interface.drive_function(twin.program,
                                                                                     conditioning.conditions)
    result = twin.run(noise, progress, drive)
    return TwinRun(result.trajectory, result.residual_history,
                   {"mode": options.get("mode", "discrete"), "iterations_step_1": result.iterations[0],
                    "settle_residual_max": float(np.max(result.settle_residuals))})


def simulate(bundle, noise: np.ndarray, arguments) -> np.ndarray:
    from admc.targets.aoc.twin_cli import simulate_twin

    return simulate_twin(bundle, noise, arguments)


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


BACKEND = TargetBackend("aoc", lower, read_program, run_twin, simulate, describe, check_files, verify_bound,
                        read_calibration)
