"""The calibration reader on both shipped machines (hw48, hw16), the presets' agreement with it, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from admc.core.errors import AdmcError
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS, read_calibration, summarise
from admc.targets.loader import load_target

HW48 = SHIPPED_CALIBRATIONS["hw48"]
HW16 = SHIPPED_CALIBRATIONS["hw16"]


def close(value: float) -> object:
    # Presets write four significant figures.
    return pytest.approx(value, rel=1e-3, abs=1e-5)


def test_reads_the_48_variable_machine() -> None:
    calibration = read_calibration(HW48)
    assert calibration.channels == 48
    assert calibration.distortion_positive.shape == (48, 3)
    assert calibration.closed_loop_scaling.shape == (48,)
    assert calibration.pbs_polynomial_positive is None
    assert calibration.sigmoid_coefficients.shape == (6,)
    assert calibration.row_profiles_positive[8] == 0 and calibration.row_profiles_negative[8] == 0
    summary = summarise(calibration)
    assert summary["dead_channels"] == [8]
    # Figures targets/aoc/calibrations/FIELDS.md §5 quotes for this machine.
    assert summary["sigmoid_exponent"] == pytest.approx(4.265, abs=1e-3)
    assert summary["kappa_range"] == pytest.approx([0.68, 0.78], abs=0.01)
    assert summary["net_offset_range"] == pytest.approx([-0.047, 0.037], abs=1e-3)
    assert summary["pbs_leakage_range"] == pytest.approx([0.0038, 0.0095], abs=1e-4)
    assert summary["contrast_positive_range"] == pytest.approx([9, 31], abs=0.5)
    assert summary["saturation_low"] == pytest.approx(-3.29, abs=0.01)
    assert summary["saturation_high"] == pytest.approx(2.85, abs=0.01)
    assert summary["pd_crosstalk_range"][1] == pytest.approx(0.31, abs=0.01)
    assert summary["pd_crosstalk_edge_ratio"] > 5 * summary["pd_crosstalk_middle_ratio"]


def test_reads_the_16_variable_machine() -> None:
    calibration = read_calibration(HW16)
    assert calibration.channels == 16
    assert calibration.pbs_polynomial_positive.shape == (15, 3)
    assert calibration.closed_loop_scaling is None and calibration.output_correction_positive is None
    # The 16-variable file gives 5 sigmoid coefficients; the missing linear term is zero.
    assert calibration.sigmoid_coefficients.shape == (6,) and calibration.sigmoid_coefficients[5] == 0
    summary = summarise(calibration)
    assert summary["dead_channels"] == []
    assert summary["input_efficiency_range"] == pytest.approx([0.991, 1.009], abs=1e-3)
    assert summary["kappa_mean"] is None and summary["pbs_leakage_mean"] is None


def independent_response_mean(path: Path) -> list[float]:
    data = yaml.safe_load(path.read_text())["column_wise_weights_distortion"]
    rows = np.array(data["positive_row12"] + data["negative_row12"], dtype=float)
    return list(rows.mean(axis=0))


@pytest.mark.parametrize(("preset", "calibration_file"), [("aoc-48", HW48), ("aoc-16", HW16)])
def test_presets_agree_with_the_calibration(preset: str, calibration_file: Path) -> None:
    summary = summarise(read_calibration(calibration_file))
    target = load_target(preset)
    assert target.module.ports == summary["channels"]
    assert list(target.slm.response) == close(summary["response"])
    assert list(target.slm.response) == close(independent_response_mean(calibration_file))
    assert list(target.slm.response_positive) == close(summary["response_positive"])
    assert list(target.slm.response_negative) == close(summary["response_negative"])
    # The chain in the machine's units (chain.py), each figure against the file read independently.
    data = yaml.safe_load(calibration_file.read_text())
    chain = target.chain
    sigmoid = (list(data["tanh_sigmoid_coeffs"]) + [0.0])[:6]
    assert list(chain.sigmoid) == pytest.approx(sigmoid, rel=1e-6, abs=1e-9)
    assert target.sigma.gain_min == target.sigma.gain_max == pytest.approx(sigmoid[0], rel=1e-6)
    assert list(chain.led_positive) == close(data["led_poly_coeffs_pos"])
    assert list(chain.led_negative) == close(data["led_poly_coeffs_neg"])
    table = data["column_wise_weights_distortion"]
    rows = np.array(table["positive_row12"] + table["negative_row12"], dtype=float)
    assert chain.slm_full_scale == close(float((rows[:, 0] + rows[:, 1]).mean()))
    efficiency = np.array(data["row_profiles"]["positive_row12"] + data["row_profiles"]["negative_row12"])
    assert chain.input_efficiency == close(float(efficiency[efficiency > 1e-6].mean()))
    if "output_correction" in data:
        output = data["output_correction"]
        assert chain.output_gain == close(float(np.mean(output["positive"] + output["negative"])))
        assert chain.loop_gain == close(float(np.mean(data["close_loop_offset_and_scale"]["scaling"])))
    else:  # targets/aoc/calibrations/FIELDS.md: η = 0.65 / 1.0 hard-coded, no closed-loop correction
        assert chain.output_gain == pytest.approx(0.825) and chain.loop_gain == 1.0
    assert chain.gain_divisor == summary["channels"]
    assert target.gain.beta_max == pytest.approx(chain.gain_per_setting * target.gain.setting_max, rel=1e-12)
    assert target.state.voltage_min == close(summary["saturation_low"])
    assert target.state.voltage_max == close(summary["saturation_high"])
    assert target.state.injection_clip == close(summary["injection_clip"])
    effects = target.nonidealities
    assert effects.slm_darkness.floor == close(summary["darkness_floor_mean"])
    assert effects.input_efficiency.minimum == close(summary["input_efficiency_range"][0])
    assert effects.input_efficiency.maximum == close(summary["input_efficiency_range"][1])
    assert list(effects.input_efficiency.dead_channels) == summary["dead_channels"]
    assert effects.pd_crosstalk.edge_ratio == close(summary["pd_crosstalk_edge_ratio"])
    assert effects.pd_crosstalk.middle_ratio == close(summary["pd_crosstalk_middle_ratio"])
    assert effects.nonlinearity.exponent == close(summary["sigmoid_exponent"])
    assert effects.saturation.low == close(summary["saturation_low"])
    assert effects.saturation.high == close(summary["saturation_high"])
    assert effects.injection_clip.limit == close(summary["injection_clip"])
    # The 16-variable file lacks PBS leakage, κ and closed-loop offsets; its preset borrows hw48's (see its
    # comments), so those figures are checked against the 48-variable file.
    summary_48 = summarise(read_calibration(HW48))
    assert effects.pbs_crosstalk.leakage == close(summary_48["pbs_leakage_mean"])
    assert effects.gain_error.relative_std == close(summary_48["kappa_relative_std"])
    assert effects.offsets.std == close(summary_48["state_offset_std"])


def copy_without(source: Path, destination: Path, section: str, key: str | None) -> Path:
    data = yaml.safe_load(source.read_text())
    if key is None:
        del data[section]
    else:
        del data[section][key]
    destination.write_text(yaml.safe_dump(data))
    return destination


@pytest.mark.parametrize(
    ("section", "key", "named"),
    [
        ("close_loop_offset_and_scale", "scaling", "close_loop_offset_and_scale.scaling"),
        ("row_profiles", "negative_row12", "row_profiles.negative_row12"),
        ("tanh_sigmoid_coeffs", None, "tanh_sigmoid_coeffs"),
        ("saturation", "positive_saturation", "saturation.positive_saturation"),
    ],
)
def test_missing_key_is_named(tmp_path: Path, section: str, key: str | None, named: str) -> None:
    path = copy_without(HW48, tmp_path / "cut.yaml", section, key)
    with pytest.raises(AdmcError) as caught:
        read_calibration(path)
    assert str(path) in str(caught.value)
    assert f"key '{named}'" in str(caught.value)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(HW48.read_text())
    data["pd_crosstalk"]["ratio_to_later_positive_row12"] = data["pd_crosstalk"]["ratio_to_later_positive_row12"][:30]
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data))
    expected = r"key 'pd_crosstalk\.ratio_to_later_positive_row12': expected shape \(48\), got \(30\)"
    with pytest.raises(AdmcError, match=expected):
        read_calibration(path)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_truncated_file_is_an_error_naming_the_file(tmp_path: Path, fraction: float) -> None:
    text = HW48.read_text()
    path = tmp_path / "truncated.yaml"
    path.write_text(text[: int(len(text) * fraction)])
    with pytest.raises(AdmcError) as caught:
        read_calibration(path)
    assert str(caught.value).startswith(f"{path}:")


def test_missing_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(AdmcError, match="absent.yaml: calibration file not found"):
        read_calibration(tmp_path / "absent.yaml")
