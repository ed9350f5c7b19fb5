"""The tolerance of the differentiable twin's run (targets/aoc/differentiable_twin.py, ``run(..., tolerance)``):
every phase stops at a relative change at or below the one asked for, a looser one takes fewer loop applications and
moves the samples by about that much only, and the default is the twin's own (the path ``admc simulate`` and the
equality tests rely on) bit for bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.driver import load_source
from admc.finetuning.compiled_model import CompiledModel
from admc.targets.aoc.twin import NOISE_FREE_TOLERANCE
from admc.targets.loader import load_target

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _model() -> CompiledModel:
    target = load_target("aoc-48")
    options = replace(BuildOptions(), steps=4, calibration=target_machine(target, "hw48"))
    return CompiledModel(load_source(EXAMPLES / "two_moons.pt2"), target, options, seed=3)


def _run(model: CompiledModel, noise: torch.Tensor, tolerance: float | None) -> tuple[torch.Tensor, int, float]:
    arrays, change = model.program()
    twin = model.twins[0]
    with torch.no_grad():
        samples = twin.run(noise, arrays, change, tolerance) if tolerance != "default" else twin.run(
            noise, arrays, change)
    return samples, twin.iterations, twin.exit_residual


def test_each_phase_stops_within_the_tolerance_and_the_default_is_the_twins_own():
    model = _model()
    try:
        noise = torch.as_tensor(np.random.default_rng(0).standard_normal((32, 2)))
        default, default_count, default_residual = _run(model, noise, "default")
        explicit, explicit_count, _ = _run(model, noise, NOISE_FREE_TOLERANCE)
        assert torch.equal(default, explicit) and default_count == explicit_count
        assert torch.equal(_run(model, noise, None)[0], default)
        assert 0.0 < default_residual <= NOISE_FREE_TOLERANCE
        for tolerance in (1e-9, 1e-6):
            loose, count, residual = _run(model, noise, tolerance)
            assert residual <= tolerance
            assert count < default_count
            moved = float((loose - default).abs().max())
            assert 0.0 < moved <= 100 * tolerance
    finally:
        model.close()


def test_the_samples_objective_trains_at_the_training_tolerance_and_samples_at_the_twins():
    from admc.finetuning.compiled_model import TRAINING_TOLERANCE

    model = _model()
    try:
        noise = np.random.default_rng(1).standard_normal((8, 2))
        with torch.no_grad():
            model.final_samples(torch.as_tensor(noise))
        assert NOISE_FREE_TOLERANCE < model.twins[0].exit_residual <= TRAINING_TOLERANCE
        model.samples(noise)
        assert model.twins[0].exit_residual <= NOISE_FREE_TOLERANCE
    finally:
        model.close()
