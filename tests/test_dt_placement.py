"""Δt placement: in the gains (one image set for every step) or, without per-channel gains, in the images."""

from __future__ import annotations

import numpy as np
import pytest
from models import AdmForm, StandardMlp, export_onnx, seeded

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.runtime.executor import IdealExecutor
from admc.runtime.reference import integrate
from admc.runtime.source_model import make_velocity


def target_file(tmp_path, per_channel: bool, float_weights: bool):
    path = tmp_path / f"target_{per_channel}_{float_weights}.yaml"
    path.write_text(f"inherits: aoc-48\nname: test\ngain: {{per_channel: {str(per_channel).lower()}}}\n"
                    f"slm: {{float_weights: {str(float_weights).lower()}}}\n")
    return path


def run_both(bundle_path, model_path):
    bundle = Bundle(bundle_path)
    program, schedule, alpha = bundle_program(bundle)
    noise = np.random.default_rng(3).standard_normal((32, 2))
    program_result = IdealExecutor(program, alpha).run(schedule, noise).trajectory
    reference = integrate(make_velocity(model_path), noise, schedule.solver, schedule.grid).trajectory
    return bundle, program_result, reference


@pytest.mark.parametrize("solver, expected_sets", [("implicit-euler", 1), ("explicit-euler", 1),
                                                   ("crank-nicolson", 2), ("heun", 2)])
def test_without_per_channel_gains_each_distinct_step_factor_gets_an_image_set(tmp_path, solver, expected_sets):
    model = export_onnx(seeded(AdmForm(), 0), tmp_path / "model.onnx")
    output = tmp_path / "bundle"
    build(model, output, target=target_file(tmp_path, False, True), solver=solver, steps=4)
    bundle, program_result, reference = run_both(output, model)
    sets = bundle.manifest["aoc"]["image_sets"]
    # Uniform grid: implicit and explicit Euler use one factor triple; Crank-Nicolson and Heun use Δt/2 in
    # an open and a closed (or second open) phase, or Δt and Δt/2.
    assert len(sets) == expected_sets
    assert bundle.manifest["aoc"]["summary"]["image_sets"] == expected_sets
    assert "images" in bundle.manifest["aoc"]["summary"]["dt_placement"]
    # Float weights: the image-set program is exact, whatever Δt sits in the weights.
    scale = np.sqrt(np.mean(reference[-1] ** 2))
    assert np.max(np.abs(program_result - reference)) / scale < 1e-9


def test_with_per_channel_gains_one_image_set_serves_every_step(tmp_path):
    model = export_onnx(seeded(AdmForm(), 1), tmp_path / "model.onnx")
    output = tmp_path / "bundle"
    grid = np.array([0.0, 0.1, 0.35, 0.5, 1.0])  # four distinct Δt
    build(model, output, target=target_file(tmp_path, True, False), solver="crank-nicolson", grid=grid)
    bundle, program_result, reference = run_both(output, model)
    section = bundle.manifest["aoc"]
    assert len(section["image_sets"]) == 1 and section["image_sets"][0]["factors"] is None
    assert "gains" in section["summary"]["dt_placement"]
    pngs = [name for name in bundle.manifest["payloads"] if name.endswith(".png")]
    assert len(pngs) == 2 * section["summary"]["modules_used"]
    steps = [np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2))
             for a, b in zip(program_result[1:], reference[1:], strict=True)]
    assert max(steps) <= 1e-2


def test_images_hold_the_step_factor_of_their_set(tmp_path):
    """The realised step block of each image set is Δt (or Δt/2) times the intended weights."""
    model = export_onnx(seeded(StandardMlp(), 2), tmp_path / "model.onnx")
    output = tmp_path / "bundle"
    build(model, output, target=target_file(tmp_path, False, True), solver="crank-nicolson", steps=4)
    bundle = Bundle(output)
    program, _, _ = bundle_program(bundle)
    classes = [block["scale_class"] for block in bundle.manifest["layout"]["blocks"]]
    base = program.phase_blocks[(1.0, 0.125, 0.125)]
    opened = program.phase_blocks[(1.0, 0.125, 0.0)]
    for index, scale_class in enumerate(classes):
        if scale_class == "feedback":
            assert np.count_nonzero(opened[index]) == 0
            assert np.count_nonzero(base[index]) > 0
        else:
            np.testing.assert_allclose(opened[index], base[index], rtol=0, atol=1e-12)
