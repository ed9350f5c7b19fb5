"""Tests of the AOC digital twin (admc.targets.aoc.twin) on small bundles built for aoc-48.

Reference values come from outside the twin: the ideal executor (exact program semantics), a numpy loop
matrix assembled port by port from the bundle's images, gains and tiles, linearisation around the fixed point
(finite-difference Jacobian) and the discrete Lyapunov equation for the read-noise covariance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from models import AdmForm, StandardMlp, example_inputs, seeded

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build
from admc.core.errors import ConvergenceError
from admc.ir.program import CLOSED, block_scale
from admc.runtime.executor import IdealExecutor, run_ideal
from admc.targets.aoc.bundle_reader import realised_transmissions, tile_block, tile_channels
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of

SOLVERS = ("explicit-euler", "heun", "implicit-euler", "crank-nicolson")
MODELS = {"direct": AdmForm, "folded-input": StandardMlp}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Bundle]:
    directory = tmp_path_factory.mktemp("twin-bundles")
    result = {}
    for solver in SOLVERS:
        for layout, model in MODELS.items():
            path = build(seeded(model(hidden=(8, 8)), 3), directory / f"{solver}-{layout}", steps=2,
                         solver=solver, example_inputs=example_inputs())
            result[(solver, layout)] = Bundle(path)
    return result


def sample_noise(bundle: Bundle, batch: int = 3, seed: int = 0) -> np.ndarray:
    dimension = int(bundle.manifest["source"]["state_dimension"])
    return np.random.default_rng(seed).standard_normal((batch, dimension))


def only(bundle: Bundle, **entries: dict) -> NonIdealities:
    """The bundle's parameters with every effect off except ``entries`` (switched on, parameters overridden)."""
    base = all_off(nonidealities_of(bundle))
    changes = {name: replace(getattr(base, name), enabled=True, **values) for name, values in entries.items()}
    return replace(base, **changes)


def ideal_trajectory(bundle: Bundle, noise: np.ndarray) -> np.ndarray:
    program, schedule, alpha = bundle_program(bundle)
    return IdealExecutor(program, alpha).run(schedule, noise).trajectory


# ------------------------------------------------------------------ independent numpy realisation


def module_routing(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per module and port: the input channel, output channel (-1: unused) and the tile's scale class."""
    manifest = bundle.manifest
    transmissions = realised_transmissions(bundle)["positive"]
    modules, ports = transmissions.shape[:2]
    inputs, outputs = np.full((modules, ports), -1), np.full((modules, ports), -1)
    classes = np.full((modules, ports), "fixed", dtype=object)
    groups = {group["name"]: group for group in manifest["layout"]["groups"]}
    for tile in manifest["aoc"]["tiles"]:
        block = tile_block(manifest["layout"], tile)
        first = groups[block["column_group"]]["offset"]
        for offset, column in enumerate(range(tile["column_start"], tile["column_stop"])):
            inputs[tile["module"], tile["input_port_start"] + offset] = first + column
        for offset, channel in enumerate(tile_channels(bundle, tile)):
            outputs[tile["module"], tile["output_port_start"] + offset] = channel
            classes[tile["module"], tile["output_port_start"] + offset] = tile["scale_class"]
    return inputs, outputs, classes


def loop_matrix(bundle: Bundle, twin: AocTwin, phase, crosstalk: bool = False, gain_error: bool = False,
                dead_port: int | None = None) -> np.ndarray:
    """S [n, n] with S σ the summed photodetector contributions, built entry by entry in numpy."""
    transmissions = realised_transmissions(bundle)
    signed = transmissions["positive"] - transmissions["negative"]  # [M, in, out]
    beta = bundle.array(bundle.manifest["aoc"]["beta"])
    inputs, outputs, classes = module_routing(bundle)
    errors = {name: value.numpy() for name, value in vars(twin.static_errors).items()}
    size = twin.size
    matrix = np.zeros((size, size))
    for module in range(signed.shape[0]):
        optics = signed[module].T.copy()  # [out, in]
        ports = optics.shape[0]
        if dead_port is not None:
            optics[:, dead_port] = 0.0
        if crosstalk:
            mixing = np.eye(ports)
            for port in range(ports - 1):
                mixing[port, port + 1] = errors["crosstalk_to_earlier"][module, port + 1]
                mixing[port + 1, port] = errors["crosstalk_to_later"][module, port]
            optics = mixing @ optics
        for out_port in range(ports):
            channel = outputs[module, out_port]
            if channel < 0:
                continue
            gain = beta[module, out_port] * block_scale(classes[module, out_port], phase.step_scale, phase.loop)
            if gain_error:
                gain *= errors["gain_factor"][module, out_port]
            for in_port in np.flatnonzero(inputs[module] >= 0):
                matrix[channel, inputs[module, in_port]] += gain * optics[out_port, in_port]
    return matrix


def offset_vector(twin: AocTwin, bundle: Bundle) -> np.ndarray:
    _, outputs, _ = module_routing(bundle)
    vector = np.zeros(twin.size)
    offsets = twin.static_errors.offsets.numpy()
    used = outputs >= 0
    np.add.at(vector, outputs[used], offsets[used])
    return vector


def reference_first_phase(bundle: Bundle, noise: np.ndarray, matrix: np.ndarray, constant: np.ndarray | None = None,
                          clip: float | None = None) -> np.ndarray:
    """Readout of step 0, phase 0 (sources "x" only): iterate z ← α z + S σ(z) + clip((1 − α) v) + constant
    with the ideal executor's σ, v and holds; closed phases to a fixed point, open ones feed-forward."""
    program, schedule, alpha = bundle_program(bundle)
    executor = IdealExecutor(program, alpha)
    phase = schedule.steps[0][0]
    compiled = executor._compiled(phase)
    inject = sum(coefficient * noise for _, coefficient in phase.inject)
    hold = sum(coefficient * noise for _, coefficient in phase.hold) if phase.hold else None
    drive = (1.0 - alpha) * executor._drive(compiled, inject, hold)
    if clip is not None:
        drive = np.clip(drive, -clip, clip)
    drive = drive + (0.0 if constant is None else constant)
    state = np.zeros((noise.shape[0], program.size))
    for channels, scale in executor.initialised:
        state[:, channels] = scale * noise
    closed = phase.loop == CLOSED
    relax = executor.alpha if closed else executor.open_alpha
    # Open phases with α > 0 on unheld channels relax too: both kinds run until the (held) state is still.
    for count in range(1, 100_000):
        if not closed:
            state = executor._hold(state, hold)
        updated = relax * state + executor._activated(state) @ matrix.T + drive
        readout = updated[:, executor.readout] / executor.readout_scale
        if not closed:
            updated = executor._hold(updated, hold)
        still = np.max(np.abs(updated - state)) < 1e-15
        state = updated
        if count >= program.open_iterations and still:
            return readout
    raise AssertionError("the reference loop did not settle")


def first_phase_inputs(twin: AocTwin, noise: np.ndarray):
    """The twin's own state and drive at the start of step 0, phase 0 (sources "x" only)."""
    x = torch.as_tensor(noise, dtype=torch.float64)
    phase = twin.schedule.steps[0][0]
    state = torch.zeros(x.shape[0], twin.size, dtype=torch.float64)
    for channels, scale in twin.initialised:
        state[:, channels] = scale * x
    inject = sum(coefficient * x for _, coefficient in phase.inject)
    hold = sum(coefficient * x for _, coefficient in phase.hold) if phase.hold else None
    return phase, state, twin._drive(phase, inject, hold), hold


def fixed_point_and_jacobian(twin: AocTwin, noise: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Noise-free closed-phase fixed point z* [B, n] and, per sample, J = ∂F/∂z at z* (central differences)."""
    phase, state, drive, hold = first_phase_inputs(twin, noise)
    fixed = twin._iterate(0, 0, phase, state, drive, hold, twin._generator())[0]
    operator = twin.loop_operator(phase)
    step = 1e-6
    columns = []
    for channel in range(twin.size):
        shift = torch.zeros(twin.size, dtype=torch.float64)
        shift[channel] = step
        plus = twin._operator(fixed + shift, operator, drive, True)
        minus = twin._operator(fixed - shift, operator, drive, True)
        columns.append(((plus - minus) / (2 * step)).numpy())
    jacobians = [np.stack([column[row] for column in columns], axis=1) for row in range(noise.shape[0])]
    return fixed.numpy(), jacobians


# ------------------------------------------------------------------ every effect off


@pytest.mark.parametrize("layout", MODELS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_all_off_discrete_twin_equals_the_ideal_executor(bundles, solver, layout):
    bundle = bundles[(solver, layout)]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
    assert bundle_program(bundle)[0].layout == layout
    np.testing.assert_allclose(twin.run(noise).trajectory, ideal_trajectory(bundle, noise), rtol=0, atol=1e-10)


def test_all_off_module_and_block_operators_agree_with_the_ideal_executor(bundles):
    bundle = bundles[("crank-nicolson", "direct")]
    noise = sample_noise(bundle)
    expected = ideal_trajectory(bundle, noise)
    for operator in ("blocks", "modules"):
        twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1, operator=operator)
        assert twin.loop_operator(twin.schedule.steps[0][0]).kind == operator
        np.testing.assert_allclose(twin.run(noise).trajectory, expected, rtol=0, atol=1e-10)


def test_every_path_effect_on_gives_the_same_result_with_either_operator(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = sample_noise(bundle)
    settings = only(bundle, slm_darkness={}, weight_error={}, input_efficiency={}, pd_crosstalk={},
                    pbs_crosstalk={}, offsets={}, gain_error={})
    results = [AocTwin(bundle, settings, repeats=1, operator=operator).run(noise).trajectory
               for operator in ("blocks", "modules")]
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-10)
    assert np.max(np.abs(results[0] - ideal_trajectory(bundle, noise))) > 1e-3


def test_all_off_continuous_twin_converges_to_the_ideal_values(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), mode="continuous", loop_iterations=400, repeats=1)
    np.testing.assert_allclose(twin.run(noise).trajectory, ideal_trajectory(bundle, noise), rtol=0, atol=1e-6)


def test_float32_twin_runs_close_to_the_float64_one(bundles):
    bundle = bundles[("implicit-euler", "folded-input")]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1, dtype=torch.float32)
    np.testing.assert_allclose(twin.run(noise).trajectory, ideal_trajectory(bundle, noise), rtol=0, atol=1e-4)


# ------------------------------------------------------------------ one effect at a time


def test_pd_crosstalk_in_an_open_phase_is_the_tridiagonal_matrix_on_the_module_outputs(bundles):
    bundle = bundles[("explicit-euler", "direct")]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, only(bundle, pd_crosstalk={}), repeats=1)
    phase = twin.schedule.steps[0][0]
    assert phase.loop == "open"
    expected = reference_first_phase(bundle, noise, loop_matrix(bundle, twin, phase, crosstalk=True))
    result = twin.run(noise).trajectory[1]
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)
    assert np.max(np.abs(result - ideal_trajectory(bundle, noise)[1])) > 1e-3


def test_numpy_loop_matrix_reproduces_the_ideal_program(bundles):
    # The independent realisation used above, checked against the ideal executor with every effect off.
    for solver in ("explicit-euler", "implicit-euler"):
        bundle = bundles[(solver, "direct")]
        noise = sample_noise(bundle)
        twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
        expected = reference_first_phase(bundle, noise, loop_matrix(bundle, twin, twin.schedule.steps[0][0]))
        np.testing.assert_allclose(ideal_trajectory(bundle, noise)[1], expected, rtol=0, atol=1e-10)


def _linearised_shift(bundle: Bundle, noise: np.ndarray, forcing: np.ndarray) -> np.ndarray:
    """Readout shift δz of the closed phase's fixed point for a small constant forcing [B, n]:
    (I − J) δz = forcing, J the noise-free twin's Jacobian at the fixed point."""
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
    _, jacobians = fixed_point_and_jacobian(twin, noise)
    shifts = np.stack([np.linalg.solve(np.eye(twin.size) - jacobian, forcing[row])
                       for row, jacobian in enumerate(jacobians)])
    return shifts[:, twin.readout] / twin.readout_scale


def test_offsets_shift_a_closed_fixed_point_by_the_linearised_amount(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, only(bundle, offsets={"std": 1e-5}), repeats=1)
    shift = twin.run(noise).trajectory[1] - ideal_trajectory(bundle, noise)[1]
    forcing = np.broadcast_to(offset_vector(twin, bundle), (noise.shape[0], twin.size))
    expected = _linearised_shift(bundle, noise, forcing)
    assert np.max(np.abs(expected)) > 1e-6
    np.testing.assert_allclose(shift, expected, rtol=1e-3, atol=1e-3 * np.max(np.abs(expected)))


def test_gain_error_shifts_a_closed_fixed_point_by_the_linearised_amount(bundles):
    bundle = bundles[("implicit-euler", "folded-input")]
    noise = sample_noise(bundle)
    twin = AocTwin(bundle, only(bundle, gain_error={"relative_std": 1e-5}), repeats=1)
    phase = twin.schedule.steps[0][0]
    shift = twin.run(noise).trajectory[1] - ideal_trajectory(bundle, noise)[1]
    reference = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
    fixed, _ = fixed_point_and_jacobian(reference, noise)
    difference = (loop_matrix(bundle, twin, phase, gain_error=True) - loop_matrix(bundle, twin, phase))
    forcing = reference._activate(torch.as_tensor(fixed)).numpy() @ difference.T
    expected = _linearised_shift(bundle, noise, forcing)
    assert np.max(np.abs(expected)) > 1e-7
    np.testing.assert_allclose(shift, expected, rtol=1e-3, atol=1e-3 * np.max(np.abs(expected)))


def test_read_noise_steady_state_covariance_solves_the_discrete_lyapunov_equation(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = sample_noise(bundle, batch=1)
    std = 1e-4
    quiet = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
    fixed, (jacobian,) = fixed_point_and_jacobian(quiet, noise)
    expected = np.diag(scipy.linalg.solve_discrete_lyapunov(jacobian, std ** 2 * np.eye(quiet.size)))
    twin = AocTwin(bundle, only(bundle, read_noise={"std": std}), repeats=1, loop_iterations=150, seed=5)
    copies = 4000
    phase, state, drive, hold = first_phase_inputs(twin, np.repeat(noise, copies, axis=0))
    final = twin._iterate(0, 0, phase, torch.as_tensor(fixed).repeat(copies, 1), drive, hold,
                          twin._generator())[0].numpy()
    variance = final.var(axis=0)
    # Sample variances of 4,000 independent draws: relative standard error √(2/4000) ≈ 2.2 %.
    np.testing.assert_allclose(variance, expected, rtol=0.12)
    np.testing.assert_allclose(final.mean(axis=0), fixed[0], rtol=0, atol=6 * np.sqrt(expected.max() / copies))


def test_injection_beyond_the_limit_is_clipped_exactly(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = 4.0 * sample_noise(bundle)
    limit = 0.05
    twin = AocTwin(bundle, only(bundle, injection_clip={"limit": limit}), repeats=1)
    phase, _, drive, _ = first_phase_inputs(twin, noise)
    program, schedule, alpha = bundle_program(bundle)
    executor = IdealExecutor(program, alpha)
    unclipped = (1.0 - alpha) * executor._drive(executor._compiled(phase), noise, None)
    assert np.max(np.abs(unclipped)) > 2 * limit
    beyond = np.abs(unclipped) >= limit
    np.testing.assert_array_equal(drive.numpy()[beyond], np.sign(unclipped[beyond]) * limit)
    np.testing.assert_allclose(drive.numpy()[~beyond], unclipped[~beyond], rtol=0, atol=1e-15)
    expected = reference_first_phase(bundle, noise, loop_matrix(bundle, twin, phase), clip=limit)
    np.testing.assert_allclose(twin.run(noise).trajectory[1], expected, rtol=0, atol=1e-10)


def test_a_dead_input_port_contributes_nothing(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    noise = sample_noise(bundle)
    dead = 0  # port 0 of every module carries a weight column
    settings = only(bundle, input_efficiency={"minimum": 1.0, "maximum": 1.0, "dead_channels": (dead,)})
    twin = AocTwin(bundle, settings, repeats=1)
    phase = twin.schedule.steps[0][0]
    expected = reference_first_phase(bundle, noise, loop_matrix(bundle, twin, phase, dead_port=dead))
    result = twin.run(noise).trajectory[1]
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10)
    assert np.max(np.abs(result - ideal_trajectory(bundle, noise)[1])) > 1e-3


# ------------------------------------------------------------------ divergence and settling


@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_a_diverging_loop_raises_naming_step_and_phase(bundles, mode):
    bundle = bundles[("implicit-euler", "direct")]
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), mode=mode, loop_iterations=4000, repeats=1)
    twin.alpha = 1.5 * torch.ones_like(twin.alpha)  # every channel feeds 1.5 × itself back: |z| grows without bound
    with pytest.raises(ConvergenceError, match=r"step 0, phase 0 \(closed loop\) diverged"):
        twin.run(sample_noise(bundle))


def test_an_oscillating_loop_between_the_rails_is_reported_as_not_settled(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    twin = AocTwin(bundle, only(bundle, saturation={}, read_noise={}), loop_iterations=200, repeats=1)
    channel = twin.program.group("hidden_1").offset
    twin.alpha[channel] = -1.2  # loop gain −1.2 on one channel: it flips sign and grows until the rails
    with pytest.raises(ConvergenceError, match=r"step 0, phase 0 \(closed loop\) did not settle"):
        twin.run(sample_noise(bundle))


def test_the_same_oscillation_without_rails_or_noise_diverges(bundles):
    bundle = bundles[("implicit-euler", "direct")]
    twin = AocTwin(bundle, all_off(nonidealities_of(bundle)), repeats=1)
    twin.alpha[twin.program.group("hidden_1").offset] = -1.2
    with pytest.raises(ConvergenceError, match=r"step 0, phase 0 \(closed loop\) diverged"):
        twin.run(sample_noise(bundle))


# ------------------------------------------------------------------ reproducibility and the CLI


def test_same_seed_same_result_other_seed_differs(bundles):
    bundle = bundles[("heun", "folded-input")]
    noise = sample_noise(bundle)

    def run(seed: int) -> np.ndarray:
        return AocTwin(bundle, loop_iterations=40, repeats=2, seed=seed).run(noise).trajectory

    first = run(0)
    np.testing.assert_array_equal(first, run(0))
    assert np.max(np.abs(first - run(1))) > 1e-6


def test_simulate_cli_runs_the_twin(bundles, tmp_path: Path, capsys: pytest.CaptureFixture):
    bundle = bundles[("implicit-euler", "folded-input")]
    noise = sample_noise(bundle, batch=5)
    np.save(tmp_path / "noise.npy", noise)
    output = tmp_path / "samples.npy"
    status = main(["simulate", str(bundle.path), "--noise", str(tmp_path / "noise.npy"), "-o", str(output),
                   "--seed", "3", "--loop-iterations", "30"])
    assert status == 0
    assert "twin" in capsys.readouterr().out
    expected = AocTwin(bundle, seed=3, loop_iterations=30).run(noise).trajectory[-1]
    np.testing.assert_array_equal(np.load(output), expected)
    assert np.max(np.abs(expected - ideal_trajectory(bundle, noise)[-1])) > 1e-6


def test_simulate_cli_refuses_noise_of_the_wrong_width(bundles, tmp_path: Path, capsys: pytest.CaptureFixture):
    bundle = bundles[("implicit-euler", "direct")]
    np.save(tmp_path / "noise.npy", np.zeros((2, 5)))
    status = main(["simulate", str(bundle.path), "--noise", str(tmp_path / "noise.npy"), "-o",
                   str(tmp_path / "out.npy")])
    assert status == 2
    assert "features" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()


def test_open_phases_run_held_rows_unrelaxed_when_alpha_is_positive(tmp_path: Path) -> None:
    """Heun's open phases on aoc-48 (whose small gain range forces α > 0 on the state rows): with every
    effect off the twin equals the ideal executor (held rows run at gain β/(1 − α), α = 0, in open phases)."""
    import dataclasses


    bundle_path = build(Path(__file__).parents[1] / "examples" / "two_moons.onnx", tmp_path / "heun",
                        target="aoc-48", solver="heun", steps=2)
    bundle = Bundle(bundle_path)
    program, schedule, alpha = bundle_program(bundle)
    readout = program.group(program.readout_group)
    assert np.max(alpha[readout.offset:readout.stop]) > 0  # the case the rescaling is for
    effects = nonidealities_of(bundle)
    for effect in dataclasses.fields(effects):
        value = getattr(effects, effect.name)
        if hasattr(value, "enabled"):
            effects = dataclasses.replace(effects, **{effect.name: dataclasses.replace(value, enabled=False)})
    noise = np.random.default_rng(3).standard_normal((16, 2))
    ideal = run_ideal(program, schedule, alpha, noise).trajectory
    twin = AocTwin(bundle, effects).run(noise).trajectory
    np.testing.assert_allclose(twin, ideal, rtol=0, atol=1e-9)
