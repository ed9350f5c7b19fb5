"""`admc build --calibration`: dead ports, compensation through the measured chain, what the bundle records."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pytest
import yaml
from models import AdmForm, export_onnx, seeded

from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import BuildOptions, build, compile_source, load_source
from admc.ir.program import block_indices
from admc.passes.manager import PassManager
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS, read_calibration
from admc.targets.aoc.chain import measured_chain
from admc.targets.aoc.compensation import small_signal
from admc.targets.aoc.twin import AocTwin
from admc.targets.loader import load_target

HW48 = SHIPPED_CALIBRATIONS["hw48"]
HW16 = SHIPPED_CALIBRATIONS["hw16"]
DEAD = 8  # targets/aoc/calibrations/FIELDS.md: row_profiles is 0 on both paths at index 8 of hw48


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("calibrated")
    return export_onnx(seeded(AdmForm(hidden=(40, 30)), 11), directory / "model.onnx")


@pytest.fixture(scope="module")
def calibrated_passes():
    """The calibrated build's pass records, every pass checked (verify mode changes nothing in the bundle)."""
    return PassManager(verify=True)


@pytest.fixture(scope="module")
def bundles(model, tmp_path_factory, calibrated_passes):
    directory = tmp_path_factory.mktemp("bundles")
    plain = Bundle(build(model, directory / "plain", solver="implicit-euler", steps=2))
    calibrated = Bundle(build(model, directory / "calibrated", solver="implicit-euler", steps=2, calibration=HW48,
                              passes=calibrated_passes))
    return plain, calibrated


def test_the_calibrated_lowering_runs_as_named_passes_checked_where_they_can_be(bundles, calibrated_passes):
    names = [record.name for record in calibrated_passes.records]
    assert names[names.index("measured chain"):names.index("emission") + 1] == [
        "measured chain", "state scaling", "tiling and placement", "routing", "operating points", "α selection",
        "gain floors", "compensation", "operating-point shift", "realised program", "emission"]
    checked = {record.name: record for record in calibrated_passes.records if record.error is not None}
    assert {"state scaling", "tiling and placement", "routing", "α selection", "emission"} <= set(checked)
    assert all(record.error <= record.bound for record in checked.values())
    assert 0 < checked["emission"].error  # the machine's remainder: the whole lowering's check is not vacuous


def covers(tile: dict, port: int) -> bool:
    return tile["input_port_start"] <= port < tile["input_port_start"] + tile["column_stop"] - tile["column_start"]


def test_no_weight_lands_on_a_dead_port(bundles):
    plain, calibrated = bundles
    assert any(covers(tile, DEAD) for tile in plain.manifest["aoc"]["tiles"])  # the test can fail
    assert not any(covers(tile, DEAD) for tile in calibrated.manifest["aoc"]["tiles"])
    for path in ("positive", "negative"):
        grey = calibrated.array(calibrated.manifest["aoc"]["grey"][path])  # [module, input port, output port]
        assert not np.any(grey[:, DEAD, :])
    assert calibrated.manifest["calibration"]["dead_input_ports"] == [DEAD]


def test_bundle_records_the_calibration_and_what_was_compensated(bundles):
    _, calibrated = bundles
    section = calibrated.manifest["calibration"]
    assert section["sha256"] == hashlib.sha256(HW48.read_bytes()).hexdigest()
    assert any("SLM transfer" in item for item in section["compensated"])
    assert any("injected voltages" in item for item in section["compensated"])
    assert section["remainder"]["clipped_pixels"] == 0
    fixed = calibrated.array(section["cancellation"]["fixed"])
    assert fixed.shape == calibrated.array(calibrated.manifest["aoc"]["beta"]).shape and np.any(fixed != 0)
    settings = calibrated.array(calibrated.manifest["aoc"]["gain_setting"])
    beta = calibrated.array(calibrated.manifest["aoc"]["beta"])
    np.testing.assert_allclose(beta, settings * calibrated.manifest["aoc"]["gain_per_setting"], rtol=1e-12)


def test_running_with_another_calibration_warns(bundles):
    _, calibrated = bundles
    with pytest.warns(UserWarning, match="compiled for calibration"):
        AocTwin(calibrated, calibration=read_calibration(HW16), repeats=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AocTwin(calibrated, calibration=read_calibration(HW48), repeats=1)


def test_compensated_weights_match_the_intended_within_half_a_grey_level(model):
    """Rebuilt from the grey levels through each column's and path's measured transfer, every weight is the
    intended one up to half a grey level of its own pixel and of the neighbours whose light spills into it."""
    target = load_target("aoc-48")
    calibration = read_calibration(HW48)
    compiled = compile_source(load_source(model), target,
                              BuildOptions(solver="implicit-euler", steps=2, calibration=calibration))
    data = yaml.safe_load(HW48.read_text())
    machine = measured_chain(calibration, 48)
    chain = target.chain
    # Each input port's light slope is its channel's fitted operating-point scale (small-signal where unused).
    channel_scale = np.load(io.BytesIO(compiled.extra_payloads["aoc/calibration/operating_scale.npy"]))
    default = small_signal(machine, chain)
    modules = np.load(io.BytesIO(compiled.extra_payloads["aoc/beta.npy"])).shape[0]
    slope = {path: np.full((modules, 48), default[path]) for path in ("positive", "negative")}
    for tile in compiled.extra_sections["aoc"]["tiles"]:
        block = compiled.program.blocks[block_indices(len(compiled.program.blocks))[tile["block"]]]
        offset = next(g.offset for g in compiled.program.groups if g.name == block.column_group)
        ports = slice(tile["input_port_start"], tile["input_port_start"] + tile["column_stop"] - tile["column_start"])
        for row, path in enumerate(("positive", "negative")):
            slope[path][tile["module"], ports] = (channel_scale[row, offset + tile["column_start"]:
                                                                offset + tile["column_stop"]] / chain.light_per_sigma)
    unit = chain.slm_full_scale * chain.input_efficiency * chain.output_gain * chain.loop_gain
    levels = np.arange(256) / 255
    beta = np.load(io.BytesIO(compiled.extra_payloads["aoc/beta.npy"]))
    alpha = compiled.alpha
    grey = {path: np.load(io.BytesIO(compiled.extra_payloads[f"aoc/grey_{path}.npy"]))
            for path in ("positive", "negative")}
    kappa = np.asarray(data["close_loop_offset_and_scale"]["scaling"])
    half_step = {}
    for path, key, output_key in (("positive", "positive_row12", "positive"),
                                  ("negative", "negative_row12", "negative")):
        table = np.asarray(data["column_wise_weights_distortion"][key])  # [column p, (a, b, c)]
        transfer = table[:, :1] * levels ** 2 + table[:, 1:2] * levels  # [p, level]
        gaps = np.diff(transfer, axis=1)
        level = grey[path].transpose(0, 2, 1).astype(int)  # [module, output p, input q]
        below = np.take_along_axis(np.pad(gaps, ((0, 0), (1, 0)))[None].repeat(level.shape[0], 0), level, axis=2)
        above = np.take_along_axis(np.pad(gaps, ((0, 0), (0, 1)))[None].repeat(level.shape[0], 0), level, axis=2)
        coefficient = (np.asarray(data["output_correction"][output_key])[None, :, None]
                       * np.asarray(data["row_profiles"][key])[None, None, :] * slope[path][:, None, :] / unit)
        half_step[path] = 0.5 * np.maximum(below, above) * coefficient
    step = np.maximum(half_step["positive"], half_step["negative"])  # [module, p, q]
    spill = data["pd_crosstalk"]
    earlier = np.maximum(spill["ratio_to_earlier_positive_row12"], spill["ratio_to_earlier_negative_row12"])
    later = np.maximum(spill["ratio_to_later_positive_row12"], spill["ratio_to_later_negative_row12"])
    bound = step.copy()
    bound[:, :-1] += earlier[1:, None] * step[:, 1:]
    bound[:, 1:] += later[:-1, None] * step[:, :-1]
    bound *= kappa[None, :, None]
    for tile in compiled.extra_sections["aoc"]["tiles"]:
        index = block_indices(len(compiled.program.blocks))[tile["block"]]
        intended = compiled.program.blocks[index].matrix[tile["row_start"]:tile["row_stop"],
                                                         tile["column_start"]:tile["column_stop"]]
        realised = compiled.realised_program.blocks[index].matrix[tile["row_start"]:tile["row_stop"],
                                                                  tile["column_start"]:tile["column_stop"]]
        rows = slice(tile["output_port_start"], tile["output_port_start"] + intended.shape[0])
        columns = slice(tile["input_port_start"], tile["input_port_start"] + intended.shape[1])
        group = next(g for g in compiled.program.groups if g.name == compiled.program.blocks[index].row_group)
        channels = np.arange(group.offset + tile["row_start"], group.offset + tile["row_stop"])
        to_weight = beta[tile["module"], rows] / (1.0 - alpha[channels])
        allowed = to_weight[:, None] * bound[tile["module"], rows, columns] + 1e-9 * np.abs(intended).max()
        assert np.all(np.abs(realised - intended) <= allowed), tile["block"]
        assert np.abs(realised - intended).max() > 0  # quantised: not trivially equal


def test_cli_builds_for_a_machine_and_refuses_a_missing_calibration(model, tmp_path, capsys):
    missing = tmp_path / "absent.yaml"
    assert main(["build", str(model), "-o", str(tmp_path / "bundle"), "--calibration", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()
