"""`admc finetune --workers N` / `--address`: each step's gradient computed data-parallel on Ray gives the weights
the single process gives (to rounding), and the same bytes run after run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("ray") is None:
    pytest.skip("ray is not installed (the 'sweep' extra)", allow_module_level=True)

from admc.finetuning.run import finetune  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, export_pt2, seeded  # noqa: E402


@pytest.mark.slow
def test_two_ray_workers_give_the_single_process_weights(tmp_path):
    model = export_pt2(seeded(AdmForm((6, 5)), 2), tmp_path / "model.pt2")
    data = 0.5 * np.random.default_rng(0).standard_normal((40, 2)) + 0.3
    single = finetune(model, data, tmp_path / "single.pt2", max_steps=3, seed=1, control=False)
    parallel = finetune(model, data, tmp_path / "parallel.pt2", max_steps=3, seed=1, control=False, workers=2)
    for name, value in single.program.weights.items():
        np.testing.assert_allclose(parallel.program.weights[name], value, rtol=1e-9, atol=1e-11)
    assert [loss for _, loss in parallel.program.holdout_loss] == pytest.approx(
        [loss for _, loss in single.program.holdout_loss], rel=1e-9)


@pytest.mark.slow
def test_two_ray_workers_fine_tune_a_guided_conditional_model_as_one_process(tmp_path):
    """The workers compile with the driver's condition inputs and guidance, and each shard carries its conditions."""
    import torch
    from conditional_models import CLASSES, example_condition, make
    from models import example_inputs

    from admc.frontends.torch_export import export_module

    path = tmp_path / "model.pt2"
    x, t = example_inputs()
    torch.export.save(export_module(make("embedding"), (x, t, example_condition("embedding")), source="c"), path)
    generator = np.random.default_rng(0)
    data, labels = 0.5 * generator.standard_normal((40, 2)), generator.integers(0, CLASSES, 40)
    options = {"max_steps": 3, "seed": 1, "control": False, "conditions": {"label": labels}, "guidance": 2.0,
               "null_conditions": {"label": CLASSES}}
    single = finetune(path, data, tmp_path / "single.pt2", **options)
    parallel = finetune(path, data, tmp_path / "parallel.pt2", workers=2, **options)
    for name, value in single.program.weights.items():
        np.testing.assert_allclose(parallel.program.weights[name], value, rtol=1e-9, atol=1e-11)
