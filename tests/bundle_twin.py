"""The bundle twin's noise-free final samples for a fine-tuning ``CompiledModel``'s build, as ``admc simulate``
drives them: every effect of the build's target (or its measured machine) but read noise. The fine-tuning tests
compare the differentiable path against this independent run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.runtime.guidance import run_conditions
from admc.targets.aoc.twin import AocTwin, nonidealities_of


def bundle_twin_samples(model, noise: np.ndarray, conditions: dict | None = None) -> np.ndarray:
    """Final samples [B, d]; ``conditions``: each sample's, for a conditional model."""
    effects = nonidealities_of(model.bundle)
    effects = replace(effects, read_noise=replace(effects.read_noise, enabled=False))
    calibration = model.compiled.calibration
    if calibration is not None:
        from admc.targets.aoc.measured_device import measured_nonidealities

        effects = replace(measured_nonidealities(calibration, effects), read_noise=effects.read_noise)
    twin = AocTwin(model.bundle, effects, calibration=calibration, seed=3, switch_on_calibrated=False)
    drive = None if conditions is None else run_conditions(model.bundle, len(noise), conditions).drive(twin.program)
    return twin.run(noise, extra_drive=drive).trajectory[-1]
