"""The differentiable program path (admc/finetuning, targets/aoc/differentiable_*.py): with the source's own
weights it runs what the bundle twin runs (nominal and calibrated, ADM form, standard MLP, time embedding;
conditional models and guidance: test_finetune_conditional.py), its map from weights to the program is the
compiler's at other weights too, its gradients are the finite differences', and what it does not cover is
refused."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_twin import bundle_twin_samples
from gradient_check import worst_gradient_error

from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.driver import SourceModel, compile_source, load_source
from admc.core.errors import AdmcError
from admc.finetuning.compiled_model import CompiledModel
from admc.finetuning.program_torch import ProgramMap
from admc.targets.loader import load_target

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, SinusoidalTime, StandardMlp, export_pt2, seeded  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXACT = 1e-10


def _compiled(model: Path, calibration: str | None = None, steps: int = 4, quantise: bool = True,
              solver: str | None = None) -> CompiledModel:
    target = load_target("aoc-48")
    options = replace(BuildOptions(), steps=steps, solver=solver, calibration=target_machine(target, calibration))
    return CompiledModel(load_source(model), target, options, seed=3, quantise=quantise)


@pytest.mark.parametrize("calibration", [None, "hw48"])
def test_two_moons_runs_as_the_bundle_twin(calibration):
    model = _compiled(EXAMPLES / "two_moons.pt2", calibration, steps=2)
    try:
        noise = np.random.default_rng(0).standard_normal((16, 2))
        difference = np.abs(model.samples(noise) - bundle_twin_samples(model, noise)).max()
        assert difference <= EXACT
    finally:
        model.close()


@pytest.mark.parametrize(("module", "solver"), [(StandardMlp, None), (SinusoidalTime, None), (StandardMlp, "heun")])
def test_standard_mlp_and_time_embedding_run_as_the_bundle_twin(tmp_path, module, solver):
    """Folded input, a time-embedding subnetwork, and open phases (Heun's explicit stage) too."""
    model = _compiled(export_pt2(seeded(module(), 3), tmp_path / "model.pt2"), solver=solver)
    try:
        assert model.compiled.program.layout == "folded-input"
        noise = np.random.default_rng(1).standard_normal((8, 2))
        assert np.abs(model.samples(noise) - bundle_twin_samples(model, noise)).max() <= EXACT
    finally:
        model.close()


def _perturbed(source: SourceModel, names: list[str], seed: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {name: source.graph.constants[name] * (1.0 + 0.1 * generator.standard_normal(
        np.shape(source.graph.constants[name]))) for name in names}


def test_the_map_is_the_compilers_at_other_weights(tmp_path):
    """Recompiling perturbed weights gives the program the torch map computes from them (up to the voltage scales
    each compile chose)."""
    path = export_pt2(seeded(StandardMlp(), 4), tmp_path / "model.pt2")
    target, options = load_target("aoc-48"), replace(BuildOptions(), steps=4)
    source = load_source(path)
    names = [name for name, value in source.graph.constants.items() if np.asarray(value).dtype.kind == "f"]
    compiled = compile_source(source, target, options)
    own = {name: torch.as_tensor(np.asarray(source.graph.constants[name]), dtype=torch.float64) for name in names}
    mapping = ProgramMap(compiled, own)
    changed = _perturbed(source, names, 7)
    other_graph = replace(source.graph, constants={**source.graph.constants, **changed})
    other = compile_source(SourceModel(other_graph, source.signature, source.content, source.format, source.name),
                           target, options)
    arrays = mapping.arrays({name: torch.as_tensor(value) for name, value in changed.items()})
    mine = {group.name: group.voltage_scale for group in compiled.program.groups}
    theirs = {group.name: group.voltage_scale for group in other.program.groups}
    for block, value in zip(other.program.blocks, arrays.blocks, strict=True):
        rescaled = value.numpy() / mine[block.row_group] * theirs[block.row_group]
        np.testing.assert_allclose(rescaled, block.matrix, rtol=1e-9, atol=1e-12)


def test_gradient_is_the_finite_differences(tmp_path):
    """Autograd through the compiled mapping and the twin's loops (implicit differentiation) against central
    differences, float64, quantisation off."""
    model = _compiled(export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2"), steps=2, quantise=False)
    noise = torch.as_tensor(np.random.default_rng(0).standard_normal((4, 2)))
    weights = torch.as_tensor(np.random.default_rng(1).standard_normal((4, 2)))

    def loss() -> torch.Tensor:
        arrays, change = model.program()
        return (model.twins[0].run(noise, arrays, change)[-1] * weights).sum()

    try:
        loss().backward()
        generator = np.random.default_rng(2)
        worst = worst_gradient_error(model.parameters.values(), loss, generator)
        assert worst <= 1e-6
    finally:
        model.close()


def test_quantised_change_is_straight_through(tmp_path):
    """With quantisation the forward moves by whole grey levels and the gradient still reaches every weight."""
    model = _compiled(export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2"), steps=2)
    try:
        noise = torch.as_tensor(np.random.default_rng(0).standard_normal((4, 2)))
        arrays, change = model.program()
        model.twins[0].run(noise, arrays, change)[-1].sum().backward()
        assert all(bool(torch.any(parameter.grad != 0)) for parameter in model.parameters.values())
        optics = model.twins[0].delta
        assert optics.grids["positive"] is not None
    finally:
        model.close()


def test_targets_without_a_differentiable_twin_are_refused():
    """(Conditional models and guidance are covered: tests/test_finetune_conditional.py.)"""
    with pytest.raises(AdmcError, match="no differentiable twin"):
        CompiledModel(load_source(EXAMPLES / "two_moons.onnx"), load_target("ideal"), BuildOptions())
