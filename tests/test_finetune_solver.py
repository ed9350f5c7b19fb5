"""How the differentiable twin solves a phase: the relaxation-free splitting (targets/aoc/differentiable_loop.py,
fixed_point.py) reaches the fixed point the twin's own iteration reaches, with the same implicit gradient, in far
fewer applications; and its gradient is the finite differences'."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from gradient_check import worst_gradient_error

from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.driver import load_source
from admc.finetuning.compiled_model import CompiledModel
from admc.targets.aoc.differentiable_twin import PLAIN, SPLIT
from admc.targets.loader import load_target

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, export_pt2, seeded  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _compiled(model: Path, calibration: str | None = None, quantise: bool = True) -> CompiledModel:
    target = load_target("aoc-48")
    options = replace(BuildOptions(), steps=4, calibration=target_machine(target, calibration))
    return CompiledModel(load_source(model), target, options, seed=3, quantise=quantise)


def _velocity_and_gradient(model: CompiledModel, solver: str, states: torch.Tensor, weights: torch.Tensor):
    model.twins[0].solver = solver
    for parameter in model.parameters.values():
        parameter.grad = None
    points = [model.phase_points[index % len(model.phase_points)] for index in range(states.shape[0])]
    velocity = model.velocity(states, points, tolerance=None)
    (velocity * weights).sum().backward()
    return velocity.detach(), {name: value.grad.clone() for name, value in model.parameters.items()}, model.iterations


@pytest.mark.parametrize("calibration", [None, "hw48"])
def test_the_split_velocity_and_gradient_are_the_twin_iterations(calibration):
    """Two moons' velocity phase (open, relaxed): the same value (≤ 1e-10) and gradient as the twin's own loop
    and adjoint iteration, in a tenth of the applications."""
    model = _compiled(EXAMPLES / "two_moons.pt2", calibration)
    try:
        generator = np.random.default_rng(0)
        states = torch.as_tensor(generator.standard_normal((24, 2)))
        weights = torch.as_tensor(generator.standard_normal((24, 2)))
        plain, plain_gradient, plain_count = _velocity_and_gradient(model, PLAIN, states, weights)
        split, split_gradient, split_count = _velocity_and_gradient(model, SPLIT, states, weights)
        assert float((split - plain).abs().max()) <= 1e-10
        for name, value in plain_gradient.items():
            assert float((split_gradient[name] - value).abs().max()) <= 1e-8 * max(1.0, float(value.abs().max()))
        assert split_count * 5 < plain_count
    finally:
        model.close()


def test_the_split_gradient_is_the_finite_differences(tmp_path):
    """Autograd through the velocity phase (split solve, split adjoint) against central differences, float64,
    quantisation off."""
    model = _compiled(export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2"), quantise=False)
    generator = np.random.default_rng(1)
    states = torch.as_tensor(generator.standard_normal((6, 2)))
    weights = torch.as_tensor(generator.standard_normal((6, 2)))
    points = [model.phase_points[index % len(model.phase_points)] for index in range(6)]

    def loss() -> torch.Tensor:
        return (model.velocity(states, points, tolerance=None) * weights).sum()

    try:
        loss().backward()
        assert not model.twins[0]._unsplit, "the velocity phase fell back to the plain iteration"
        worst = worst_gradient_error(model.parameters.values(), loss, generator)
        assert worst <= 1e-6
    finally:
        model.close()


def test_the_routed_module_form_gives_the_dense_velocity_and_gradient(monkeypatch):
    """Large programs keep the optics as routed module matrices (and their transposes in the split adjoint): the
    same value and gradient as the dense channel matrices of a small one."""
    from admc.targets.aoc import differentiable_loop

    model = _compiled(EXAMPLES / "two_moons.pt2", "hw48")
    try:
        generator = np.random.default_rng(2)
        states = torch.as_tensor(generator.standard_normal((16, 2)))
        weights = torch.as_tensor(generator.standard_normal((16, 2)))
        dense, dense_gradient, _ = _velocity_and_gradient(model, SPLIT, states, weights)
        monkeypatch.setattr(differentiable_loop, "DENSE_RATIO", 0)
        routed, routed_gradient, _ = _velocity_and_gradient(model, SPLIT, states, weights)
        assert not model.twins[0]._unsplit
        assert float((routed - dense).abs().max()) <= 1e-12
        for name, value in dense_gradient.items():
            assert float((routed_gradient[name] - value).abs().max()) <= 1e-9 * max(1.0, float(value.abs().max()))
    finally:
        model.close()
