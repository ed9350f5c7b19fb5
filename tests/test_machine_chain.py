"""The twin's measured chain against an independent transcription of the makers' forward pass, on bundles
built for the nominal machine and for the measured one (``--calibration``), every module driven as the makers'
cell drives it (images read as W and divided by max |W|, every port lit); and each of its effects alone
against an independent computation (targets/aoc/calibrations/FIELDS.md §1-2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import makers_forward
import numpy as np
import pytest
import torch
from models import AdmForm, StandardMlp, export_onnx, seeded

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS, read_calibration
from admc.targets.aoc.machine_chain import slm_drive
from admc.targets.aoc.twin import AocTwin, all_off

HW48 = SHIPPED_CALIBRATIONS["hw48"]
HW16 = SHIPPED_CALIBRATIONS["hw16"]

PROGRAMS = {
    "aoc-48": [("adm", AdmForm(hidden=(10, 8))), ("mlp", StandardMlp(hidden=(12, 12))),
               ("adm-wide", AdmForm(hidden=(40, 30)))],
    "aoc-16": [("adm", AdmForm(hidden=(6, 4))), ("mlp", StandardMlp(hidden=(6, 6))),
               ("adm-deep", AdmForm(hidden=(4, 4, 3)))],
}
MACHINES = (("aoc-48", HW48), ("aoc-16", HW16))
CASES = [(target, calibration, index) for target, calibration in MACHINES for index in range(3)]
# Compiled for the machine too (hw16 refuses the (6, 4) ADM form: its realised loops do not settle).
CALIBRATED_PROGRAMS = {"aoc-48": (0, 1), "aoc-16": (1, 2)}
CALIBRATED_CASES = [(target, calibration, index) for target, calibration in MACHINES
                    for index in CALIBRATED_PROGRAMS[target]]


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


@pytest.fixture(scope="module")
def calibrated_bundles(tmp_path_factory):
    """The same programs compiled for the measured machine (grey levels, gains and injections compensated)."""
    made = {}
    for (target, calibration), programs in zip(MACHINES, PROGRAMS.values(), strict=True):
        for index in CALIBRATED_PROGRAMS[target]:
            name, module = programs[index]
            directory = tmp_path_factory.mktemp(f"{target}-{name}-calibrated")
            model = export_onnx(seeded(module, 3 + index), directory / "model.onnx")
            made[(target, index)] = Bundle(build(model, directory / "bundle", target=target,
                                                 solver="implicit-euler", steps=2, calibration=calibration))
    return made


def twin_loop_term(twin: AocTwin, state: torch.Tensor) -> torch.Tensor:
    operator = twin._build_operator((1.0, 1.0, 1.0))
    result = torch.zeros_like(state)
    return operator.accumulate(twin._activate(state), result) + operator.constant


def makers_port_terms(twin: AocTwin, bundle: Bundle, calibration_file: Path, state: np.ndarray) -> np.ndarray:
    """The makers' cell on every module, [B, M, P]: the images are loaded as W (grey levels, unscaled: the cell
    divides by max |W| itself), every port lit, a port no channel drives held at 0 V."""
    data = makers_forward.load(calibration_file)
    drive = slm_drive(bundle)
    inputs = twin.input_channel.numpy()
    padded = np.concatenate([state, np.zeros((state.shape[0], 1))], axis=1)
    terms = []
    for module in range(inputs.shape[0]):
        weights = (drive["positive"][module] - drive["negative"][module]).T  # [source, detector]
        terms.append(makers_forward.gradient_term(padded[:, inputs[module]], weights, twin.chain.settings[module],
                                                  data))
    return np.stack(terms, axis=1)


def makers_loop_term(twin: AocTwin, bundle: Bundle, calibration_file: Path, state: np.ndarray) -> np.ndarray:
    """The makers' cell's outputs summed per channel (ports no channel reads dropped)."""
    size = state.shape[1]
    total = np.zeros((state.shape[0], size + 1))
    terms = makers_port_terms(twin, bundle, calibration_file, state)
    np.add.at(total, (slice(None), twin.output_channel.numpy()), terms)
    return total[:, :size]


def agrees_with_the_makers_cell(bundle: Bundle, calibration_file: Path, seed: int) -> None:
    calibration = read_calibration(calibration_file)
    twin = AocTwin(bundle, calibration=calibration, repeats=1)
    switches = twin.nonidealities
    for name in ("led_response", "sigmoid_offsets", "slm_transfer", "output_gain", "slm_darkness",
                 "input_efficiency", "pd_crosstalk", "pbs_crosstalk", "nonlinearity"):
        assert getattr(switches, name).enabled, name
    if calibration.closed_loop_scaling is not None:  # the 16-port machine has no closed-loop correction
        assert switches.offsets.enabled and switches.gain_error.enabled
    state = torch.as_tensor(np.random.default_rng(seed).uniform(-1.5, 1.5, (16, twin.size)))
    ours = twin_loop_term(twin, state).numpy()
    theirs = makers_loop_term(twin, bundle, calibration_file, state.numpy())
    assert np.max(np.abs(ours - theirs)) <= 1e-6 * max(1.0, np.max(np.abs(theirs)))
    assert np.max(np.abs(theirs)) > 1e-3  # a real signal was compared


def full_scale_peaks(bundle: Bundle) -> list[float]:
    drive = slm_drive(bundle)
    return [float(max(drive["positive"][module].max(), drive["negative"][module].max()))
            for module in range(drive["positive"].shape[0])]


@pytest.mark.parametrize(("target", "calibration_file", "index"), CASES)
def test_twin_agrees_with_the_makers_forward_pass(bundles, target, calibration_file, index):
    bundle = bundles[(target, index)]
    assert full_scale_peaks(bundle) == [1.0] * len(full_scale_peaks(bundle))  # the cell's max |W| is 1
    agrees_with_the_makers_cell(bundle, calibration_file, index)


@pytest.mark.parametrize(("target", "calibration_file", "index"), CALIBRATED_CASES)
def test_calibrated_bundle_agrees_with_the_makers_forward_pass(calibrated_bundles, target, calibration_file,
                                                               index):
    """A bundle compiled for the machine, loaded as the makers' cell loads it, runs what the twin runs."""
    bundle = calibrated_bundles[(target, index)]
    drive = bundle.manifest["calibration"]["drive"]
    assert drive["modules_below_full_scale"] == []
    assert full_scale_peaks(bundle) == [1.0] * len(full_scale_peaks(bundle))
    agrees_with_the_makers_cell(bundle, calibration_file, 7 + index)


@pytest.mark.parametrize(("target", "calibration_file", "index"), CALIBRATED_CASES)
def test_calibrated_bundle_holds_unused_ports_at_zero(calibrated_bundles, target, calibration_file, index):
    """On the makers' cell an unused output port's loop term plus its injected cancellation is 0 whatever the
    state, so its voltage (which drives its LED) stays at the 0 V the bundle assumes; the manifest lists the
    unused ports the routing leaves."""
    bundle = calibrated_bundles[(target, index)]
    calibration = read_calibration(calibration_file)
    twin = AocTwin(bundle, calibration=calibration, repeats=1)
    inputs, outputs = twin.input_channel.numpy(), twin.output_channel.numpy()
    drive = bundle.manifest["calibration"]["drive"]
    assert drive["unused_input_ports"] == [np.flatnonzero(row == twin.size).tolist() for row in inputs]
    assert drive["unused_output_ports"] == [np.flatnonzero(row == twin.size).tolist() for row in outputs]
    state = np.random.default_rng(index).uniform(-1.5, 1.5, (8, twin.size))
    terms = makers_port_terms(twin, bundle, calibration_file, state)
    class_factor = np.ones_like(twin.chain.settings)  # unused ports' setting is 0: any factor gives the same
    held = terms + twin.chain.cancellation_at(class_factor)[None]
    unused = outputs == twin.size
    assert unused.any()
    assert np.max(np.abs(held[:, unused])) <= 1e-12
    if calibration.closed_loop_scaling is not None:  # 48 ports: the closed-loop offset would make them drift
        assert np.max(np.abs(terms[:, unused])) > 1e-4


# ------------------------------------------------------------------------------------------------------
# Each effect alone, against its closed form on the nominal chain (every other effect at its nominal value).

def routed(twin: AocTwin, state: np.ndarray, per_module) -> np.ndarray:
    """Σ over modules of per_module(module, port voltages) [B, P_out], summed per channel (a port no channel
    drives is lit at 0 V)."""
    inputs, outputs = twin.input_channel.numpy(), twin.output_channel.numpy()
    size = state.shape[1]
    padded = np.concatenate([state, np.zeros((state.shape[0], 1))], axis=1)
    total = np.zeros((state.shape[0], size + 1))
    for module in range(inputs.shape[0]):
        np.add.at(total, (slice(None), outputs[module]),
                  per_module(module, padded[:, inputs[module]]))
    return total[:, :size]


def closed_form(effect: str, twin: AocTwin, bundle: Bundle, calibration_file: Path, state: np.ndarray):
    data = makers_forward.load(calibration_file)
    chain = bundle.manifest["target"]["chain"]
    slm = bundle.manifest["target"]["slm"]
    # The sigmoid is the machine's own (its input gain has no nominal alternative).
    a, b, c, d, f, g = (list(data["tanh_sigmoid_coeffs"]) + [0.0])[:6]
    led_p, led_n = np.asarray(chain["led_positive"]), np.asarray(chain["led_negative"])
    slope = (led_p[2] + led_n[2]) / 2
    drive = slm_drive(bundle)
    table = data["column_wise_weights_distortion"]
    transfer = {"positive": np.asarray(table["positive_row12"]), "negative": np.asarray(table["negative_row12"])}
    nominal_loop = chain["loop_gain"]
    ports = drive["positive"].shape[1]

    def per_module(module, voltages):
        t = d * np.tanh(a * voltages)
        if effect == "nonlinearity":
            argument = a * voltages
            t = d * argument / (1 + np.abs(argument) ** c) ** (1 / c)
        if effect == "sigmoid_offsets":
            t = d * np.tanh(a * voltages + b) + f + g * voltages
        light = {"positive": slope * t, "negative": slope * t}
        if effect == "led_response":
            light = {"positive": np.polyval(data["led_poly_coeffs_pos"], t),
                     "negative": np.polyval(data["led_poly_coeffs_neg"], t)}
        detected = {}
        for path in ("positive", "negative"):
            u = drive[path][module]  # [out, in]
            response = slm.get(f"response_{path}") or slm["response"]
            weights = chain["slm_full_scale"] * (response[0] * u ** 2 + response[1] * u) / (response[0] + response[1])
            if effect == "slm_transfer":
                weights = transfer[path][:, :1] * u ** 2 + transfer[path][:, 1:2] * u
            if effect == "slm_darkness":
                weights = weights + transfer[path][:, 2:3]
            efficiency = np.full(ports, chain["input_efficiency"])
            if effect == "input_efficiency":
                efficiency = np.asarray(data["row_profiles"][f"{path}_row12"])
            gain = np.full(ports, chain["output_gain"])
            if effect == "output_gain":
                gain = (np.asarray(data["output_correction"][path]) if "output_correction" in data
                        else np.full(ports, 0.65 if path == "positive" else 1.0))
            signal = gain * ((light[path] * efficiency) @ weights.T)
            if effect == "pbs_crosstalk" and "output_correction" in data:
                leak = np.asarray(data["pbs_crosstalk"]["negative_to_positive" if path == "positive"
                                                        else "positive_to_negative"])
                signal = signal + leak * gain * efficiency * light[path]
            if effect == "pd_crosstalk":
                spill = data["pd_crosstalk"]
                earlier = np.asarray(spill[f"ratio_to_earlier_{path}_row12"])
                later = np.asarray(spill[f"ratio_to_later_{path}_row12"])
                spilled = signal.copy()
                for port in range(ports):
                    if port + 1 < ports:
                        spilled[:, port] += earlier[port + 1] * signal[:, port + 1]
                    if port > 0:
                        spilled[:, port] += later[port - 1] * signal[:, port - 1]
                signal = spilled
            detected[path] = signal
        if effect == "pbs_crosstalk" and "output_correction" not in data:
            # 16 ports: detector j ≥ 1 gets the other path's fanned-in light through weight column 16 − j.
            polynomials = data["pbs_crosstalk"]
            fanned = {path: chain["input_efficiency"] * light[path] for path in light}
            for detector in range(1, ports):
                column, row = ports - detector, ports - 1 - detector
                for source, into, sign, norm in (("positive", "negative", 1, 0.06), ("negative", "positive", -1, 0.04)):
                    A, B, C = polynomials[f"poly_coeffs_{into}_row12"][row]
                    w = drive[source][module][column, :]
                    detected[into][:, detector] += sign * fanned[source] @ (np.sqrt(2) * (A * w * w + B * w + C)) / norm
        settings = twin.chain.settings[module]
        kappa = np.full(ports, nominal_loop)
        if effect == "gain_error" and "close_loop_offset_and_scale" in data:
            kappa = np.asarray(data["close_loop_offset_and_scale"]["scaling"])
        term = kappa * settings / ports * (detected["positive"] - detected["negative"])
        if effect == "offsets" and "close_loop_offset_and_scale" in data:
            loop = data["close_loop_offset_and_scale"]
            term = term + kappa * loop["solution_to_adc_ratio"] * (np.asarray(loop["dc_offset"])
                                                                    + settings * np.asarray(loop["linear_offset"]))
        return term

    return routed(twin, state, per_module)


EFFECTS = (None, "nonlinearity", "sigmoid_offsets", "led_response", "slm_transfer", "slm_darkness",
           "input_efficiency", "output_gain", "pbs_crosstalk", "pd_crosstalk", "gain_error", "offsets")


@pytest.mark.parametrize("effect", EFFECTS)
@pytest.mark.parametrize(("target", "calibration_file"), [("aoc-48", HW48), ("aoc-16", HW16)])
def test_each_effect_alone_matches_its_closed_form(bundles, effect, target, calibration_file):
    bundle = bundles[(target, 0)]
    calibration = read_calibration(calibration_file)
    reference = AocTwin(bundle, calibration=calibration, repeats=1)
    switches = all_off(reference.nonidealities)
    if effect is not None:
        switches = replace(switches, **{effect: replace(getattr(switches, effect), enabled=True)})
    twin = AocTwin(bundle, switches, calibration=calibration, switch_on_calibrated=False, repeats=1)
    state = np.random.default_rng(5).uniform(-1.2, 1.2, (8, twin.size))
    ours = twin_loop_term(twin, torch.as_tensor(state)).numpy()
    expected = closed_form(effect or "", twin, bundle, calibration_file, state)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9 * max(1.0, np.abs(expected).max()))
    if effect is None:  # all off: exactly the program's β (T⁺ − T⁻) tanh(a z) (docs/design.md's identity)
        beta = bundle.array(bundle.manifest["aoc"]["beta"])
        transmissions = {path: np.transpose(realised, (0, 2, 1)) for path, realised in
                         __import__("admc.targets.aoc.bundle_reader", fromlist=["x"]).realised_transmissions(
                             bundle).items()}
        compensation = bundle.manifest["aoc"].get("sigma_compensation")
        if compensation:  # the machine loads T·k, compiled for the preset's σ shape (sigma_shape.py)
            from admc.targets.aoc.sigma_shape import port_scales

            per_port = port_scales(bundle.array(compensation["output_scale"]), twin.input_channel.numpy())
            transmissions = {path: value * per_port[:, None, :] for path, value in transmissions.items()}
        a = bundle.manifest["target"]["chain"]["sigmoid"][0]
        ideal = routed(twin, state, lambda module, voltages: np.tanh(a * voltages) @ (
            beta[module][:, None] * (transmissions["positive"][module] - transmissions["negative"][module])).T)
        # to the preset's rounding of the calibration's sigmoid (7 significant figures)
        np.testing.assert_allclose(ours, ideal, rtol=0, atol=1e-6 * np.abs(ideal).max())
