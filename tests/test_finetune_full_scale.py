"""A pixel pushed past full scale on a measured machine (targets/aoc/differentiable_optics.py, ``saturated``): the
forward holds it at full scale either way; with ``hold_full_scale`` (an option, off by default) it gets no gradient,
so the fit does not push a weight the machine cannot show it, which the next rebuild would realise at once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.driver import load_source
from admc.finetuning.compiled_model import CompiledModel
from admc.targets.aoc.differentiable_optics import saturated
from admc.targets.loader import load_target

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_saturated_holds_values_past_the_top_without_gradient():
    grid = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 0.5]], dtype=torch.float64)
    value = torch.tensor([[[0.3, 1.2], [0.5, 0.7]]], dtype=torch.float64, requires_grad=True)
    held = saturated(value, grid)
    assert held.tolist() == [[[0.3, 1.0], [0.5, 0.5]]]
    held.sum().backward()
    assert value.grad.tolist() == [[[1.0, 0.0], [1.0, 0.0]]]  # at the top itself the gradient still passes


def _samples_and_gradient(hold: bool, noise: torch.Tensor):
    target = load_target("aoc-48")
    options = replace(BuildOptions(), steps=2, calibration=target_machine(target, "hw48"))
    model = CompiledModel(load_source(EXAMPLES / "two_moons.pt2"), target, options, seed=3, hold_full_scale=hold)
    try:
        with torch.no_grad():
            for value in model.parameters.values():
                value.mul_(1.1)  # every module's peak pixels past full scale
        samples = model.final_samples(noise)
        samples.sum().backward()
        return samples.detach(), {name: value.grad.clone() for name, value in model.parameters.items()}
    finally:
        model.close()


def test_the_forward_is_the_same_and_the_gradient_stops_past_full_scale():
    noise = torch.as_tensor(np.random.default_rng(0).standard_normal((6, 2)))
    held, held_gradient = _samples_and_gradient(True, noise)
    passed, passed_gradient = _samples_and_gradient(False, noise)
    assert torch.equal(held, passed)
    differences = [float((held_gradient[name] - passed_gradient[name]).abs().max()) for name in held_gradient]
    assert max(differences) > 1e-6


def test_hold_full_scale_is_refused_with_workers(tmp_path):
    """The Ray workers build their own twins without it: refused before any work, nothing written."""
    import pytest

    from admc.core.errors import AdmcError
    from admc.finetuning.flow_matching import FitSettings
    from admc.finetuning.run import finetune

    data = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(AdmcError, match="hold_full_scale"):
        finetune(EXAMPLES / "two_moons.onnx", data, tmp_path / "tuned.onnx", calibration="hw48", workers=2,
                 settings=FitSettings(hold_full_scale=True))
    assert not (tmp_path / "tuned.onnx").exists()
