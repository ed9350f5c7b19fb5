"""The RRAM target's entries in the backend interface (``admc.targets.backends``): lowering, the realised
program of a bundle, the SDE twin for verify and simulate, and the ``admc inspect`` section.

Requires: RRAM bundles and compiled programs. Guarantees: each entry delegates to the module owning the job.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.targets.backends import TargetBackend, TwinRun
from admc.targets.rram.manifest_section import RramSection


def lowering(compiled, layout: str):
    from admc.targets.rram.lowering import rram_lowering

    return rram_lowering(compiled, layout)


def read_program(bundle):
    from admc.targets.rram.bundle_reader import read_program as read_rram

    return read_rram(bundle)


def _refuse_conditions(bundle, options) -> None:
    if options.conditions.interface.parts:
        raise AdmcError(f"{bundle.path}: the rram twin runs unconditional programs only")


def run_twin(bundle, noise: np.ndarray, options, progress=None) -> TwinRun:
    from admc.targets.rram.twin import RramTwin

    _refuse_conditions(bundle, options)
    twin = RramTwin(bundle, seed=options.seed)
    trajectory = twin.run(noise, progress)
    return TwinRun(trajectory, [], twin.summary())


def simulate(bundle, noise: np.ndarray, options) -> tuple[np.ndarray, str]:
    from admc.targets.rram.twin import simulate_twin

    _refuse_conditions(bundle, options)
    return simulate_twin(bundle, noise, options)


def describe(manifest: dict) -> tuple[dict, list[str]]:
    section = manifest.get("rram", {})
    summary = dict(section.get("summary", {}))
    lines = list(summary.pop("lines", []))
    return {"rram": {**summary, "weight_error": section.get("weight_error", []),
                     "timing": section.get("timing", {})}}, lines


def verify_bound(bundle) -> tuple[str, float]:
    """Recomputed from the description's device levels and the program's layers in series (the manifest's
    report only informs)."""
    from admc.targets.rram.lowering import FLOAT_TOLERANCE, quantisation_bound

    target = bundle.target
    if target.conductance.float_levels:
        return "relative_error", FLOAT_TOLERANCE
    return "per_step_nrmse", quantisation_bound(int(bundle.manifest["layout"]["open_iterations"]),
                                                target.conductance.levels)


BACKEND = TargetBackend("rram", lowering, read_program, run_twin, simulate, describe, verify_bound=verify_bound,
                        manifest_section=RramSection)
