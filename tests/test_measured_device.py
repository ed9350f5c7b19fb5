"""The twin on a measured machine: per-channel figures from a calibration file (the makers' format)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import AdmForm, export_onnx, seeded

from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS, read_calibration
from admc.targets.aoc.twin import AocTwin

HW48 = SHIPPED_CALIBRATIONS["hw48"]
HW16 = SHIPPED_CALIBRATIONS["hw16"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    directory = tmp_path_factory.mktemp("measured")
    model = export_onnx(seeded(AdmForm(hidden=(40, 30)), 7), directory / "model.onnx")
    return Bundle(build(model, directory / "bundle", solver="implicit-euler", steps=2))


def test_static_errors_are_the_calibration_files_figures(bundle):
    calibration = read_calibration(HW48)
    twin = AocTwin(bundle, calibration=calibration, loop_iterations=20, repeats=1)
    errors = twin.static_errors
    modules = errors.input_efficiency_positive.shape[0]
    # Independent reading of the file's arrays: every module carries the machine's per-channel vectors.
    expected_efficiency = np.tile(calibration.row_profiles_positive, (modules, 1))
    np.testing.assert_array_equal(errors.input_efficiency_positive.numpy(), expected_efficiency)
    assert torch.all(errors.input_efficiency_positive[:, 8] == 0) and torch.all(
        errors.input_efficiency_negative[:, 8] == 0)  # the dead channel (targets/aoc/calibrations/FIELDS.md)
    a, b, c = calibration.distortion_negative.T
    np.testing.assert_allclose(errors.darkness_negative[0].numpy(), c / (a + b + c), rtol=0, atol=1e-15)
    kappa = calibration.closed_loop_scaling
    np.testing.assert_allclose(errors.gain_factor[0].numpy(), kappa / kappa.mean(), rtol=1e-14)
    assert twin.nonidealities.input_efficiency.enabled and twin.nonidealities.offsets.enabled
    assert twin.nonidealities.nonlinearity.exponent == pytest.approx(calibration.sigmoid_coefficients[2])
    # Without a calibration the same twin draws its own device instead.
    drawn = AocTwin(bundle, loop_iterations=20, repeats=1).static_errors
    assert not torch.equal(drawn.input_efficiency_positive, errors.input_efficiency_positive)


def test_a_machine_with_other_ports_gets_the_channel_means(bundle):
    calibration = read_calibration(HW16)  # 16 channels, the bundle's modules have 48 ports
    twin = AocTwin(bundle, calibration=calibration, loop_iterations=20, repeats=1)
    efficiency = twin.static_errors.input_efficiency_positive
    assert torch.allclose(efficiency, torch.full_like(efficiency, calibration.row_profiles_positive.mean()))


def test_cli_takes_a_calibration_file_and_refuses_a_missing_one(bundle, tmp_path, capsys):
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).standard_normal((8, 2)))
    output = tmp_path / "out.npy"
    assert main(["simulate", str(bundle.path), "--noise", str(noise), "-o", str(output), "--loop-iterations",
                 "40", "--calibration", str(HW48)]) == 0
    assert np.load(output).shape == (8, 2)
    missing = tmp_path / "missing.yaml"
    assert main(["verify", str(bundle.path), "--calibration", str(missing), "--samples", "8"]) == 2
    assert str(missing) in capsys.readouterr().err
