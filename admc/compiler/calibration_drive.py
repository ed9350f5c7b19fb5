"""The conditions a target's calibration runs see: the hook a backend's state scaling (and σ fit) calls so
that the voltage scales cover the injected conditions.

Requires: a ``CompiledProgram`` with its conditioning interface (spine units; empty for an unconditional
program). Guarantees: ``calibration_drive`` draws ``samples`` conditions with ``seed + 1`` from the
declared distribution (standard normal for a vector condition without one) and returns their per-phase
drive on the compiled program, or None when the interface injects nothing. ``condition_sampler`` gives the α
pass's acceptance and probes and the loop budget the same kind of draw for whichever program they run (the
spine's, or a target's scaled or realised one: the interface in that program's volts).
"""

from __future__ import annotations

from typing import Any

from admc.runtime.conditioning import ConditionSampler, Drive, sample_conditions

CALIBRATION_SAMPLES = 256
CALIBRATION_SEED = 0


def calibration_drive(compiled: Any, samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED) -> Drive | None:
    """The conditioning drive for a calibration run whose noise is ``samples`` seeded Gaussian draws."""
    return interface_drive(compiled.condition_interface, compiled.program, samples, seed)


def interface_drive(interface: Any, program: Any, samples: int = CALIBRATION_SAMPLES,
                    seed: int = CALIBRATION_SEED) -> Drive | None:
    """``calibration_drive`` for a conditioning ``interface`` on the spine ``program`` (before a
    ``CompiledProgram`` exists)."""
    declared = interface.distribution
    distribution = {condition.name: declared.get(condition.name, {"kind": "normal"})
                    for condition in interface.inputs}
    conditions = sample_conditions(interface.inputs, distribution, samples, seed + 1)
    return interface.drive_function(program, interface.check(conditions, samples))


def condition_sampler(interface: Any) -> ConditionSampler | None:
    """``(program, samples, seed) → drive`` of ``samples`` seeded condition draws on ``program`` (the interface
    scaled by its groups' voltage scales); None for an unconditional program. The machine's loops always carry a
    condition (or the null one), so a run that judges them must too: without one, eight Gaussians on aoc-48 at
    T = 4 had a 362-iteration loop that no conditioned sample needs (at most 82)."""
    if not interface.parts:
        return None
    return lambda program, samples, seed: interface_drive(interface.scaled(program), program, samples, seed)
