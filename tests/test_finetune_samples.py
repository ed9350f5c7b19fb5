"""The ``samples`` objective (admc/finetuning/flow_matching.py, CompiledModel.final_samples and reference_samples):
with the source's weights its loss is the mean squared error between the bundle twin's samples and the reference
executor's, computed independently; its gradient through every step of the sampler is the finite differences';
`admc finetune --objective samples` writes a model `admc build` takes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_twin import bundle_twin_samples
from gradient_check import worst_gradient_error

import admc
from admc.cli.commands import main
from admc.compiler.build_options import BuildOptions
from admc.compiler.driver import build, load_source
from admc.core.errors import AdmcError
from admc.finetuning.compiled_model import CompiledModel
from admc.finetuning.flow_matching import draw, loss_of, with_reference
from admc.finetuning.objectives import OBJECTIVES, SAMPLES
from admc.targets.loader import load_target

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, StandardMlp, export_onnx, export_pt2, seeded  # noqa: E402

STEPS = 3


def _compiled(model: Path, quantise: bool = True) -> CompiledModel:
    options = replace(BuildOptions(), steps=STEPS)
    return CompiledModel(load_source(model), load_target("aoc-48"), options, seed=3, quantise=quantise)


def _draws(model: CompiledModel, count: int, seed: int):
    data = torch.as_tensor(np.random.default_rng(seed).standard_normal((count, 2)))
    return with_reference(model, draw(model, data, count, torch.Generator().manual_seed(seed)))


def test_the_objective_is_listed():
    assert SAMPLES in OBJECTIVES


@pytest.mark.parametrize("module", [AdmForm, StandardMlp])
def test_the_loss_is_the_bundle_twins_error_against_the_reference(tmp_path, module):
    """Independently: the bundle twin (noise off) and `admc.reference` on the build's solver and steps."""
    path = export_pt2(seeded(module(), 4), tmp_path / "model.pt2")
    model = _compiled(path)
    try:
        draws = _draws(model, 8, 0)
        with torch.no_grad():
            loss = float(loss_of(model, draws, "program", 0, SAMPLES))
        noise = draws.noise.numpy()
        twin = bundle_twin_samples(model, noise)
        ideal = admc.reference(path, noise, solver=model.compiled.schedule.solver, steps=STEPS)
        assert abs(loss - float(np.mean((twin - ideal) ** 2))) <= 1e-10
        assert loss > 1e-8  # the machine does differ from the source: the check is not vacuous
    finally:
        model.close()


def test_gradient_through_the_sampler_is_the_finite_differences(tmp_path):
    model = _compiled(export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2"), quantise=False)
    try:
        draws = _draws(model, 4, 1)
        loss_of(model, draws, "program", 0, SAMPLES).backward()
        worst = worst_gradient_error(model.parameters.values(),
                                     lambda: loss_of(model, draws, "program", 0, SAMPLES), np.random.default_rng(2))
        assert worst <= 1e-6
    finally:
        model.close()


def test_the_digital_fit_is_refused(tmp_path):
    model = _compiled(export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2"))
    try:
        with pytest.raises(AdmcError, match="objective 'samples'"):
            loss_of(model, _draws(model, 2, 0), "digital", 0, SAMPLES)
    finally:
        model.close()


def test_the_command_writes_a_model_admc_build_takes(tmp_path, capsys):
    export_onnx(seeded(AdmForm((6, 5)), 2), tmp_path / "model.onnx")
    np.save(tmp_path / "data.npy", 0.5 * np.random.default_rng(0).standard_normal((40, 2)) + 0.3)
    tuned = tmp_path / "tuned.onnx"
    assert main(["finetune", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "data.npy"), "-o", str(tuned),
                 "--max-steps", "3", "--seed", "1", "--objective", "samples", "-q"]) == 0
    assert "program: " in capsys.readouterr().out
    source, written = load_source(tmp_path / "model.onnx"), load_source(tuned)
    assert written.signature == source.signature
    assert (build(tuned, tmp_path / "bundle", target="aoc-48", steps=2) / "manifest.json").is_file()


def test_a_guided_conditional_loss_is_the_bundle_twins_error_against_the_guided_reference(tmp_path):
    """Each sample's condition drives both the twin and the reference, guided at the build's W."""
    from test_finetune_conditional import INPUT_NAMES, NULL, _compiled, _export
    from test_finetune_conditional import example_condition as condition_of

    path = _export("embedding", tmp_path)
    model = _compiled(path, "embedding", 3.0, "hw48")
    name = INPUT_NAMES["embedding"][2]
    try:
        noise = np.random.default_rng(0).standard_normal((8, 2))
        conditions = {name: condition_of("embedding", 8).numpy()}
        base = draw(model, torch.as_tensor(noise), 8, torch.Generator().manual_seed(0),
                    {name: torch.as_tensor(conditions[name])})
        draws = with_reference(model, replace(base, noise=torch.as_tensor(noise), conditions={
            name: torch.as_tensor(conditions[name])}))
        with torch.no_grad():
            loss = float(loss_of(model, draws, "program", 0, SAMPLES))
        twin = bundle_twin_samples(model, noise, conditions)
        ideal = admc.reference(path, noise, solver=model.compiled.schedule.solver, steps=2, conditions=conditions,
                               guidance=3.0, null_conditions=[f"{name}={NULL['embedding']}"])
        assert abs(loss - float(np.mean((twin - ideal) ** 2))) <= 1e-10
        assert loss > 1e-8
    finally:
        model.close()
