"""Run-time conditions and guidance for a bundle: the samples' conditions checked against the bundle's
interface, and a guidance weight W other than the one the program was built for.

Requires: a verified bundle and noise [B, d]. Guarantees:
- ``run_conditions`` returns the run's ``RunConditions`` (empty for an unconditional program given no
  conditions); conditions that do not match the declared inputs (names, shapes, dtypes) are refused naming
  the condition, its shape and the expected one.
- ``check_runtime_guidance`` refuses W for a bundle built without guidance, a W that is not finite and
  ≥ 0, and a W other than the built one when the bundle's W lives in its images (``runtime_adjustable``).
- ``apply_runtime_guidance`` returns the program with its guided blocks rescaled for W (ideal execution);
  a target's twin rescales its own gains (its backend's ``run_twin``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.ir.program import BlockProgram
from admc.passes.condition_interface import guidance_factors
from admc.runtime.bundle_interface import read_interface
from admc.runtime.conditioning import ConditioningInterface, RunConditions


def run_conditions(bundle: Bundle, batch: int, conditions: dict[str, np.ndarray] | None = None,
                   guidance: float | None = None) -> RunConditions:
    """The conditions of a run of ``batch`` samples on ``bundle``, checked, with run-time guidance W."""
    interface = read_interface(bundle)
    checked = interface.check(conditions or {}, batch, str(bundle.path))
    check_runtime_guidance(bundle, interface, guidance)
    return RunConditions(interface, checked, guidance)


def check_runtime_guidance(bundle: Bundle, interface: ConditioningInterface, guidance: float | None) -> None:
    """Refuse a run-time guidance weight the bundle cannot run (see the module docstring)."""
    if guidance is None:
        return
    section = (bundle.manifest.get("conditions") or {}).get("guidance")
    if not section:
        raise AdmcError(f"{bundle.path}: --guidance needs a bundle built with --guidance (classifier-free "
                        "guidance); this one has no unconditional copy")
    if not np.isfinite(guidance) or guidance < 0:
        raise AdmcError(f"--guidance must be a finite number ≥ 0, got {guidance}")
    if guidance != interface.guidance and not section.get("runtime_adjustable"):
        raise AdmcError(f"{bundle.path}: the guidance weight {interface.guidance} is fixed in this bundle "
                        f"({section.get('why', 'not adjustable')}); rebuild with --guidance {guidance}")


def changed_guidance(run: RunConditions) -> dict[str, float] | None:
    """The factors turning the built guidance into the run's (per guidance role), or None when the run
    keeps the weight the program was built for."""
    built, requested = run.interface.guidance, run.guidance
    if requested is None or built is None or requested == built:
        return None
    return guidance_factors(built, requested)


def apply_runtime_guidance(program: BlockProgram, run: RunConditions) -> BlockProgram:
    """The program with the guided blocks rescaled for the run's guidance weight (ideal execution)."""
    factors = changed_guidance(run)
    if factors is None:
        return program
    blocks = list(program.blocks)
    for role, indices in run.interface.guided_blocks.items():
        for index in indices:
            blocks[index] = replace(blocks[index], matrix=factors[role] * blocks[index].matrix)
    return replace(program, blocks=blocks)
