"""The twin's measured chain against an independent transcription of the makers' forward pass, and each of
its effects alone against an independent computation (FIELDS.md §1-2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import makers_forward
import numpy as np
import pytest
import torch
from models import AdmForm, StandardMlp, export_onnx, seeded

from admc.bundle import Bundle
from admc.driver import build
from admc.targets.aoc.calibration import read_calibration
from admc.targets.aoc.machine_chain import slm_drive
from admc.targets.aoc.twin import AocTwin, all_off

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "aoc"
HW48 = SHARED / "hw48_April2025_corrected_pd_3.yaml"
HW16 = SHARED / "hw16_June2024_saturation_pieces_clip2p6.yaml"
pytestmark = pytest.mark.skipif(not (HW48.is_file() and HW16.is_file()),
                                reason="shared calibration files are not present")

PROGRAMS = {
    "aoc-48": [("adm", AdmForm(hidden=(10, 8))), ("mlp", StandardMlp(hidden=(12, 12))),
               ("adm-wide", AdmForm(hidden=(40, 30)))],
    "aoc-16": [("adm", AdmForm(hidden=(6, 4))), ("mlp", StandardMlp(hidden=(6, 6))),
               ("adm-deep", AdmForm(hidden=(4, 4, 3)))],
}
CASES = [(target, calibration, index) for target, calibration in (("aoc-48", HW48), ("aoc-16", HW16))
         for index in range(3)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    made = {}
    for target, programs in PROGRAMS.items():
        for index, (name, module) in enumerate(programs):
            directory = tmp_path_factory.mktemp(f"{target}-{name}")
            model = export_onnx(seeded(module, 3 + index), directory / "model.onnx")
            made[(target, index)] = Bundle(build(model, directory / "bundle", target=target,
                                                 solver="implicit-euler", steps=2))
    return made


def twin_loop_term(twin: AocTwin, state: torch.Tensor) -> torch.Tensor:
    operator = twin._build_operator((1.0, 1.0, 1.0))
    result = torch.zeros_like(state)
    return operator.accumulate(twin._activate(state), result) + operator.constant


def makers_loop_term(twin: AocTwin, bundle: Bundle, calibration_file: Path, state: np.ndarray) -> np.ndarray:
    """The makers' cell on every module: ports read their channel's voltage, outputs summed per channel."""
    data = makers_forward.load(calibration_file)
    drive = slm_drive(bundle)
    inputs, outputs = twin.input_channel.numpy(), twin.output_channel.numpy()
    size = state.shape[1]
    padded = np.concatenate([state, np.zeros((state.shape[0], 1))], axis=1)
    total = np.zeros((state.shape[0], size + 1))
    for module in range(inputs.shape[0]):
        weights = (drive["positive"][module] - drive["negative"][module]).T  # [source, detector]
        assert np.abs(weights).max() == pytest.approx(1.0)  # the cell normalises by max|W|
        term = makers_forward.gradient_term(padded[:, inputs[module]], weights, twin.chain.settings[module], data,
                                            dark=inputs[module] == size)
        np.add.at(total, (slice(None), outputs[module]), term)
    return total[:, :size]


@pytest.mark.parametrize(("target", "calibration_file", "index"), CASES)
def test_twin_agrees_with_the_makers_forward_pass(bundles, target, calibration_file, index):
    bundle = bundles[(target, index)]
    calibration = read_calibration(calibration_file)
    twin = AocTwin(bundle, calibration=calibration, repeats=1)
    switches = twin.nonidealities
    for name in ("led_response", "sigmoid_offsets", "slm_transfer", "output_gain", "slm_darkness",
                 "input_efficiency", "pd_crosstalk", "pbs_crosstalk", "nonlinearity"):
        assert getattr(switches, name).enabled, name
    if calibration.closed_loop_scaling is not None:  # the 16-port machine has no closed-loop correction
        assert switches.offsets.enabled and switches.gain_error.enabled
    state = torch.as_tensor(np.random.default_rng(index).uniform(-1.5, 1.5, (16, twin.size)))
    ours = twin_loop_term(twin, state).numpy()
    theirs = makers_loop_term(twin, bundle, calibration_file, state.numpy())
    assert np.max(np.abs(ours - theirs)) <= 1e-6 * max(1.0, np.max(np.abs(theirs)))
    assert np.max(np.abs(theirs)) > 1e-3  # a real signal was compared
