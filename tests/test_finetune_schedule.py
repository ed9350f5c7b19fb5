"""Fit options for what a rebuild does (admc/finetuning/flow_matching.py): the cosine learning-rate schedule, and the
held-out loss recorded through the structure trained through before each rebuild, which must not change the fit."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from admc.compiler.driver import load_source
from admc.core.errors import AdmcError
from admc.finetuning.flow_matching import COSINE, FitSettings, _scheduler, adam
from admc.finetuning.objectives import TEACHER
from admc.finetuning.run import finetune

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, export_pt2, seeded  # noqa: E402


def _rates(settings: FitSettings, steps: int) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(3))
    optimiser = adam([weight], 1e-3)
    scheduler = _scheduler(optimiser, settings)
    rates = []
    for _ in range(steps):
        rates.append(optimiser.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_the_cosine_schedule_falls_from_the_rate_to_zero_at_max_steps():
    rates = _rates(FitSettings(max_steps=8, schedule=COSINE), 10)
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * min(k, 8) / 8)) for k in range(10)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-18)
    assert rates[0] == 1e-3 and rates[8] == rates[9] == 0.0
    assert _rates(FitSettings(max_steps=8), 10) == [1e-3] * 10


def test_an_unknown_schedule_is_refused():
    with pytest.raises(AdmcError, match="schedule 'linear'"):
        _rates(FitSettings(schedule="linear"), 1)


def test_recording_the_trained_through_loss_leaves_the_fit_unchanged(tmp_path):
    source = export_pt2(seeded(AdmForm((6, 5)), 2), tmp_path / "model.pt2")
    data = 0.5 * np.random.default_rng(0).standard_normal((40, 2)) + 0.3
    results = []
    for record in (False, True):
        settings = FitSettings(learning_rate=2e-4, evaluate_every=2, holdout_batch=64, schedule=COSINE,
                               record_trained_through=record)
        results.append(finetune(source, data, tmp_path / f"tuned{record}.pt2", max_steps=4, seed=1,
                                objective=TEACHER, settings=settings, control=False).program)
    plain, recorded = results
    assert plain.trained_through_loss == []
    assert [step for step, _ in recorded.trained_through_loss] == [2, 4]
    assert recorded.holdout_loss == plain.holdout_loss
    assert (tmp_path / "tunedTrue.pt2").read_bytes() == (tmp_path / "tunedFalse.pt2").read_bytes()
    # Through the structure trained through, the loss is not the rebuilt one (a rebuild changes the program).
    assert all(through != rebuilt for (_, through), (_, rebuilt) in zip(recorded.trained_through_loss,
                                                                        recorded.holdout_loss[1:], strict=True))


def test_rollback_returns_to_the_best_weights_after_each_evaluation_without_improvement(tmp_path):
    """Steps far too large make every evaluation worse than the source: each sends the fit back to the source's
    weights (rebuilt), until patience ends it; the written model is the source's weights."""
    source = export_pt2(seeded(AdmForm((6, 5)), 2), tmp_path / "model.pt2")
    data = 0.5 * np.random.default_rng(0).standard_normal((40, 2)) + 0.3
    settings = FitSettings(learning_rate=0.3, evaluate_every=2, holdout_batch=64, patience=3, rollback=True)
    program = finetune(source, data, tmp_path / "tuned.pt2", max_steps=12, seed=1, objective=TEACHER,
                       settings=settings, control=False).program
    losses = [loss for _, loss in program.holdout_loss]
    assert program.best_step == 0 and all(loss > losses[0] for loss in losses[1:])
    assert program.steps == 6 and program.rollbacks == 2  # the third evaluation without improvement stops it
    assert program.rebuilds == 3 + 2  # each evaluation's and each rollback's
    original = load_source(source).graph.constants
    for name, value in program.weights.items():
        np.testing.assert_allclose(value, np.asarray(original[name]), rtol=1e-6)
