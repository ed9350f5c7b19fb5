"""Fine-tuning selects on the rebuilt program: before each held-out evaluation the tuned weights are recompiled as
`admc build` compiles the written file, so the written model's held-out loss on its own rebuild is the one the
fit recorded as best, never above the source's."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from admc.compiler.build_options import BuildOptions
from admc.compiler.driver import load_source
from admc.finetuning.compiled_model import CompiledModel
from admc.finetuning.flow_matching import FitSettings, draw, loss_of
from admc.finetuning.objectives import TEACHER
from admc.finetuning.run import _split, finetune
from admc.targets.loader import load_target

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, export_pt2, seeded  # noqa: E402


def test_the_written_model_is_the_best_rebuilt_one(tmp_path):
    source = export_pt2(seeded(AdmForm((6, 5)), 2), tmp_path / "model.pt2")
    data = 0.5 * np.random.default_rng(0).standard_normal((40, 2)) + 0.3
    settings = FitSettings(learning_rate=2e-4, evaluate_every=2, holdout_batch=64)
    result = finetune(source, data, tmp_path / "tuned.pt2", max_steps=6, seed=1, objective=TEACHER,
                      settings=settings, control=False)
    program = result.program
    assert program.rebuilds == 3 and [step for step, _ in program.holdout_loss] == [0, 2, 4, 6]
    recorded = dict(program.holdout_loss)
    assert recorded[program.best_step] == min(recorded.values()) <= recorded[0]

    rebuilt = CompiledModel(load_source(tmp_path / "tuned.pt2"), load_target("aoc-48"), BuildOptions(), seed=1,
                            chips=4)
    try:
        original = load_source(source).graph.constants
        rebuilt.initial = {name: torch.as_tensor(np.asarray(original[name]), dtype=torch.float64)
                           for name in rebuilt.parameters}
        _, holdout = _split(data, 1)
        fixed = draw(rebuilt, torch.as_tensor(holdout), 64, torch.Generator().manual_seed(2))
        with torch.no_grad():
            loss = float(loss_of(rebuilt, fixed, "program", 0, TEACHER))
        assert abs(loss - recorded[program.best_step]) <= 1e-9 * recorded[program.best_step]
    finally:
        rebuilt.close()


def test_a_rebuild_keeps_the_parameter_tensors_and_the_teacher(tmp_path):
    """The optimiser's tensors stay; at the rebuilt weights the change against the new structure is zero."""
    source = export_pt2(seeded(AdmForm((4, 3)), 5), tmp_path / "model.pt2")
    from admc.finetuning.model_writer import load_tuned

    model = CompiledModel(load_source(source), load_target("aoc-48"), replace(BuildOptions(), steps=2))
    try:
        tensors, teacher = dict(model.parameters), {name: value.clone() for name, value in model.initial.items()}
        moved = {name: value.detach().numpy() * 1.05 for name, value in model.parameters.items()}
        model.rebuild(load_tuned(source, moved, tmp_path))
        assert all(model.parameters[name] is tensor for name, tensor in tensors.items())
        for name, value in moved.items():
            np.testing.assert_allclose(model.parameters[name].detach().numpy(), value, rtol=1e-6)
            assert torch.equal(model.initial[name], teacher[name])
        _, change = model.program()
        assert float(change.detach().abs().max()) == 0.0
    finally:
        model.close()
