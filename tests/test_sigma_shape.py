"""The uncalibrated AOC build's σ-shape compensation (targets/aoc/sigma_shape.py, sigma_build.py): the per-channel
output scale k of k·s(u) ≈ tanh(u), checked against the twin's own σ (physics.activation), folded into the images
and read back by the twin; a target without a declared σ shape is unaffected."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from models import AdmForm, export_onnx, seeded

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.runtime.executor import IdealExecutor
from admc.targets.aoc import sigma_build
from admc.targets.aoc.bundle_reader import image_sets
from admc.targets.aoc.nonidealities import NonIdealities, Nonlinearity
from admc.targets.aoc.physics import activation
from admc.targets.aoc.sigma_shape import declared_exponent, fit_output_scales, fold_into_rows, port_scales
from admc.targets.aoc.slm import realised_weight
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
from admc.targets.loader import load_target

EXPONENT = 4.265


def machine_sigma(argument: np.ndarray) -> np.ndarray:
    """The twin's own σ with the nonlinearity on (an implementation independent of sigma_shape's)."""
    settings = NonIdealities(nonlinearity=Nonlinearity(enabled=True, exponent=EXPONENT))
    return activation(torch.as_tensor(argument), settings).numpy()


def test_fitted_scale_reduces_the_mismatch_against_the_twins_sigma():
    """On voltages of several spreads: k ≤ 1, the rms error of k·s against tanh (s evaluated by the twin's
    physics) falls (3× at 0.2 V), and the reported errors are the ones recomputed here."""
    rng = np.random.default_rng(0)
    spreads = np.array([0.05, 0.2, 0.4, 0.8])  # volts; σ gain 3.58 as on aoc-48
    states = rng.standard_normal((4096, spreads.size)) * spreads
    gain = np.full(spreads.size, 3.58037)
    fit = fit_output_scales(states, gain, np.ones(spreads.size, bool), (-3.29, 2.845), EXPONENT)
    argument = np.clip(states, -3.29, 2.845) * gain
    wanted = np.tanh(argument)
    machine = machine_sigma(argument)
    norm = np.sqrt(np.sum(wanted ** 2, axis=0))
    before = np.sqrt(np.sum((machine - wanted) ** 2, axis=0)) / norm
    after = np.sqrt(np.sum((fit.scale * machine - wanted) ** 2, axis=0)) / norm
    np.testing.assert_allclose(fit.error_before, before, rtol=1e-9)
    np.testing.assert_allclose(fit.error_after, after, rtol=1e-9)
    assert np.all(fit.scale <= 1.0) and np.all(fit.scale > 0.85)
    # 0.093 → 0.027 at 0.2 V; 0.048 → 0.037 at 0.8 V, where both curves are saturated most of the time.
    assert np.all(after <= 0.8 * before) and after[1] <= 0.35 * before[1], (before, after)
    # Nearly linear (0.05 V): s and tanh both ≈ u, so k ≈ 1 and little to gain.
    assert fit.scale[0] > fit.scale[2]


def test_channels_without_tanh_or_signal_keep_unit_scale():
    states = np.random.default_rng(1).standard_normal((256, 3)) * np.array([0.5, 0.5, 0.0])
    fit = fit_output_scales(states, np.full(3, 3.58), np.array([True, False, True]), (-3.29, 2.845), EXPONENT)
    assert fit.scale[0] < 1.0 and fit.scale[1] == 1.0 and fit.scale[2] == 1.0
    assert list(fit.fitted) == [True, False, False]


def test_folding_keeps_every_product_and_the_row_range():
    rng = np.random.default_rng(2)
    transmission = rng.uniform(-1, 1, (5, 4))
    transmission[0] = 0.0  # an empty row keeps its gain
    transmission /= np.maximum(np.max(np.abs(transmission), axis=1, keepdims=True), 1e-300)
    beta = rng.uniform(0.5, 2.0, 5)
    scale = np.array([0.9, 0.95, 1.0, 0.92])
    floor = 0.6
    folded, gains = fold_into_rows(transmission, scale, beta, floor)
    np.testing.assert_allclose(gains[:, None] * folded, beta[:, None] * transmission * scale, rtol=1e-12)
    assert np.all(np.abs(folded) <= 1.0 + 1e-12) and np.all(gains >= np.minimum(beta, floor) - 1e-12)
    assert gains[0] == beta[0]


def test_only_a_declared_sigma_shape_is_compensated():
    assert declared_exponent(load_target("aoc-48")) == pytest.approx(EXPONENT)
    for name in ("ideal", "rram-128"):
        assert declared_exponent(load_target(name)) is None
    aoc = load_target("aoc-48")
    effects = aoc.nonidealities  # the description is a frozen pydantic model: copied with updates
    tanh_machine = aoc.model_copy(update={"nonidealities": effects.model_copy(update={
        "nonlinearity": effects.nonlinearity.model_copy(update={"enabled": False})})})
    assert declared_exponent(tanh_machine) is None


def test_port_scales_maps_unused_ports_to_one():
    scales = port_scales(np.array([0.9, 0.8]), np.array([[1, 0, -1, 2]]))
    np.testing.assert_array_equal(scales, [[0.8, 0.9, 1.0, 1.0]])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The same small model on aoc-48, compensated and (fit switched off) not."""
    directory = tmp_path_factory.mktemp("sigma")
    model = export_onnx(seeded(AdmForm(hidden=(24, 20)), 5), directory / "model.onnx")
    compensated = Bundle(build(model, directory / "compensated", solver="implicit-euler", steps=4))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sigma_build, "fit", lambda compiled, scaled, target, alpha: None)
        plain = Bundle(build(model, directory / "plain", solver="implicit-euler", steps=4))
    tanh_target = directory / "tanh.yaml"
    tanh_target.write_text(yaml.safe_dump({"inherits": "aoc-48", "name": "aoc-48-tanh",
                                           "nonidealities": {"nonlinearity": {"enabled": False}}}))
    undeclared = Bundle(build(model, directory / "undeclared", target=tanh_target, solver="implicit-euler",
                              steps=4))
    return compensated, plain, undeclared


def test_images_hold_the_scaled_transmissions_and_the_manifest_records_k(bundles):
    compensated, _, undeclared = bundles
    section = compensated.manifest["aoc"]["sigma_compensation"]
    scale = compensated.array(section["output_scale"])
    assert section["channels_fitted"] > 0 and section["sigma_error_compensated"] < section["sigma_error_uncompensated"]
    entry = image_sets(compensated)[0]
    slm = compensated.manifest["target"]["slm"]
    twin = AocTwin(compensated)
    per_port = port_scales(scale, twin.input_channel.numpy())
    for path in ("positive", "negative"):
        loaded = realised_weight(compensated.array(entry["grey"][path]).astype(np.float64) / 255,
                                 slm[f"response_{path}"])
        stored = compensated.array(entry["transmission"][path])
        np.testing.assert_allclose(loaded, stored * per_port[:, :, None], rtol=0, atol=1e-12)
        assert loaded.max() <= 1.0
    assert any("σ shape" in line for line in compensated.manifest["aoc"]["summary"]["lines"])
    # No declared σ shape: nothing fitted, grey levels only.
    assert "sigma_compensation" not in undeclared.manifest["aoc"]
    assert image_sets(undeclared)[0].get("transmission") is None


def twin_error(bundle: Bundle, effects: NonIdealities, noise: np.ndarray) -> float:
    program, schedule, alpha = bundle_program(bundle)
    ideal = IdealExecutor(program, alpha).run(schedule, noise).trajectory[-1]
    final = AocTwin(bundle, effects, repeats=1).run(noise).trajectory[-1]
    return float(np.sqrt(np.mean((final - ideal) ** 2) / np.mean(ideal ** 2)))


def test_twin_with_the_sigma_shape_lands_closer_to_the_program(bundles):
    """Only the nonlinearity on: the compensated bundle's twin is at least 2× closer to its ideal program than
    the uncompensated one's; every effect off, the compensated twin is the ideal program (to rounding)."""
    compensated, plain, _ = bundles
    noise = np.random.default_rng(3).standard_normal((32, 2))
    default = nonidealities_of(compensated)
    only_shape = replace(all_off(default), nonlinearity=default.nonlinearity)
    errors = [twin_error(bundle, only_shape, noise) for bundle in (compensated, plain)]
    assert errors[0] < 0.5 * errors[1], errors
    assert twin_error(compensated, all_off(default), noise) < 1e-10
    # The device effects act on the loaded (in-range) transmissions: weight error alone is no worse than on
    # the uncompensated images (it was 10× worse when they acted on T instead of T·k).
    only_weights = replace(all_off(default), weight_error=default.weight_error)
    weight_errors = [twin_error(bundle, only_weights, noise) for bundle in (compensated, plain)]
    assert weight_errors[0] < 1.5 * weight_errors[1], weight_errors


def test_transmissions_that_the_images_do_not_load_are_refused(bundles, tmp_path):
    """A compensated bundle verifies its stored T but the machine loads the grey levels: T·k must be what they
    load, else a re-hashed, doctored T would verify weights the machine never runs."""
    import json
    import shutil

    import admc.bundle.store
    from admc.targets.aoc.bundle_reader import check_emitted_files

    compensated = bundles[0]
    check_emitted_files(compensated)  # as built: consistent
    copy = tmp_path / "doctored"
    shutil.copytree(compensated.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    name = image_sets(compensated)[0]["transmission"]["positive"]
    doctored = compensated.array(name).copy()
    doctored[doctored > 0.1] *= 1.02  # 2 % more weight than the images hold
    content = admc.bundle.store.npy_bytes(doctored)
    (copy / name).write_bytes(content)
    manifest["payloads"][name] = admc.bundle.store.sha256(content)
    manifest.pop(admc.bundle.store.DIGEST_FIELD)
    manifest[admc.bundle.store.DIGEST_FIELD] = admc.bundle.store.sha256(admc.bundle.store.canonical_bytes(manifest))
    (copy / "manifest.json").write_bytes(admc.bundle.store.manifest_bytes(manifest))
    with pytest.raises(AdmcError, match="σ-shape scales differ from what the grey levels"):
        check_emitted_files(Bundle(copy))


def test_the_fit_sees_the_loop_the_machine_runs():
    """The fit records σ's voltages with the α the machine runs (after the gain range), so the program depends
    on the α mode only through α: where ``auto`` keeps ``min``'s α, both build the same realised program. (The
    fit used to record with the source-level α of the mode, which moved weights by up to 1.5e-3.)"""
    from pathlib import Path

    from admc.compiler.driver import BuildOptions, compile_source, load_source

    source = load_source(Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx")
    target = load_target("aoc-48")
    built = {mode: compile_source(source, target, BuildOptions(solver="implicit-euler", steps=4, alpha=mode))
             for mode in ("min", "auto")}
    assert np.array_equal(built["min"].alpha, built["auto"].alpha), "premise: auto keeps min's α on this program"
    assert "sigma_compensation" in built["auto"].extra_sections["aoc"], "premise: the build compensates σ"
    for mine, theirs in zip(built["min"].realised_program.blocks, built["auto"].realised_program.blocks,
                            strict=True):
        assert np.array_equal(mine.matrix, theirs.matrix)
