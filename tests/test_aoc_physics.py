"""Tests of the AOC loop physics (admc.targets.aoc.physics) and a quick run of the calibration sweep.

Checks use closed forms (stationary variance of an AR(1) loop, linearised fixed-point shift, sigmoid limits) or a
second, loop-based numpy implementation of the optical model.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from admc.core.errors import AdmcError
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.physics import activation, module_matrices, optical_outputs
from admc.targets.aoc.single_module import Acquisition, continuous_time_solve, loop_iteration, relaxed_operator
from admc.targets.aoc.static_errors import sample_static_errors

DTYPE = torch.float64
ENTRIES = [
    "slm_darkness", "weight_error", "input_efficiency", "pd_crosstalk", "pbs_crosstalk", "offsets", "gain_error",
    "nonlinearity", "saturation", "read_noise", "injection_clip",
]


def enabled(*names: str, seed: int = 7, **parameters: dict) -> NonIdealities:
    mapping: dict = {name: {"enabled": True, **parameters.get(name, {})} for name in names}
    mapping["seed"] = seed
    return NonIdealities.from_mapping(mapping)


def random_tiles(generator: torch.Generator, modules: int, outputs: int, inputs: int) -> tuple[torch.Tensor, ...]:
    positive = torch.rand(modules, outputs, inputs, generator=generator, dtype=DTYPE)
    negative = torch.rand(modules, outputs, inputs, generator=generator, dtype=DTYPE)
    return positive, negative


def test_all_disabled_is_the_exact_product_for_tiles_of_any_size():
    generator = torch.Generator().manual_seed(0)
    nonidealities = NonIdealities()
    static = sample_static_errors(nonidealities, 3, 48, generator)
    for outputs, inputs in [(48, 48), (30, 17), (5, 48), (1, 1)]:
        positive, negative = random_tiles(generator, 3, outputs, inputs)
        drive = 2.0 * torch.rand(4, 3, inputs, generator=generator, dtype=DTYPE) - 1.0
        expected = np.einsum("mpq,bmq->bmp", (positive - negative).numpy(), drive.numpy())
        result = optical_outputs(drive, positive, negative, nonidealities, static)
        np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-12)


def test_all_disabled_loop_is_alpha_z_plus_beta_w_tanh_plus_v():
    generator = torch.Generator().manual_seed(1)
    positive, negative = random_tiles(generator, 1, 12, 12)
    state = torch.randn(5, 12, generator=generator, dtype=DTYPE)
    injection = 3.0 * torch.randn(12, generator=generator, dtype=DTYPE)  # beyond any clip: clip must be off
    static = sample_static_errors(NonIdealities(), 1, 48)
    result = loop_iteration(state, positive[0], negative[0], 0.3, 0.7, injection, NonIdealities(), static)
    expected = 0.3 * state.numpy() + 0.7 * np.tanh(state.numpy()) @ (positive[0] - negative[0]).numpy().T
    np.testing.assert_allclose(result.numpy(), expected + injection.numpy(), rtol=0, atol=1e-12)


def test_pd_crosstalk_is_an_explicit_tridiagonal_matrix_on_the_ideal_output():
    generator = torch.Generator().manual_seed(2)
    nonidealities = enabled("pd_crosstalk")
    static = sample_static_errors(nonidealities, 2, 48, generator)
    positive, negative = random_tiles(generator, 2, 20, 31)
    drive = torch.randn(3, 2, 31, generator=generator, dtype=DTYPE)
    ideal = torch.einsum("mpq,bmq->bmp", positive - negative, drive).numpy()
    result = optical_outputs(drive, positive, negative, nonidealities, static).numpy()
    for module in range(2):
        earlier = static.crosstalk_to_earlier[module].numpy()
        later = static.crosstalk_to_later[module].numpy()
        matrix = np.eye(20)
        for row in range(20):
            if row + 1 < 20:
                matrix[row, row + 1] = earlier[row + 1]  # channel row+1 spills to its earlier neighbour
            if row >= 1:
                matrix[row, row - 1] = later[row - 1]
        np.testing.assert_allclose(result[:, module], ideal[:, module] @ matrix.T, rtol=1e-13, atol=1e-13)


def test_crosstalk_ratios_are_high_at_both_ends_and_low_mid_array():
    nonidealities = enabled("pd_crosstalk", pd_crosstalk={"edge_ratio": 0.25, "middle_ratio": 0.02})
    static = sample_static_errors(nonidealities, 4, 48)
    for ratios in (static.crosstalk_to_earlier, static.crosstalk_to_later):
        assert float(ratios[:, [0, -1]].min()) > 0.8 * 0.25 * 0.9
        assert float(ratios[:, 20:28].max()) < 1.2 * 0.03


def test_dead_channel_contributes_nothing_and_efficiency_profile_is_bounded_and_centre_heavy():
    nonidealities = enabled("input_efficiency", input_efficiency={"minimum": 0.5, "maximum": 1.3,
                                                                  "dead_channels": [8]})
    static = sample_static_errors(nonidealities, 2, 48)
    generator = torch.Generator().manual_seed(3)
    positive, negative = random_tiles(generator, 2, 48, 48)
    drive = torch.randn(4, 2, 48, generator=generator, dtype=DTYPE)
    changed = drive.clone()
    changed[..., 8] += 5.0
    first = optical_outputs(drive, positive, negative, nonidealities, static)
    second = optical_outputs(changed, positive, negative, nonidealities, static)
    assert torch.equal(first, second)
    for profile in (static.input_efficiency_positive, static.input_efficiency_negative):
        alive = torch.cat([profile[:, :8], profile[:, 9:]], dim=1)
        assert float(alive.min()) >= 0.5 - 1e-12 and float(alive.max()) <= 1.3 + 1e-12
        assert float(profile[:, 8].abs().max()) == 0.0
        assert float(profile[:, 22:26].min()) > 1.2 and float(profile[:, [0, -1]].max()) < 0.65


def test_full_optical_model_matches_a_loop_based_second_implementation():
    nonidealities = enabled("slm_darkness", "weight_error", "input_efficiency", "pd_crosstalk", "pbs_crosstalk",
                            weight_error={"relative_std": 0.05}, input_efficiency={"dead_channels": [2]})
    static = sample_static_errors(nonidealities, 1, 8)
    generator = torch.Generator().manual_seed(4)
    positive, negative = random_tiles(generator, 1, 6, 7)
    drive = torch.randn(2, 1, 7, generator=generator, dtype=DTYPE)
    result = optical_outputs(drive, positive, negative, nonidealities, static).numpy()

    def path(transmission, floor, factor, efficiency, leakage, batch):
        signal = np.zeros(6)
        for output in range(6):
            for source in range(7):
                pixel = floor[output] + (1.0 - floor[output]) * transmission[output, source]
                pixel = min(max(pixel * factor[output, source], 0.0), 1.0)
                signal[output] += pixel * efficiency[source] * drive[batch, 0, source].item()
            if output < 7:
                signal[output] += leakage[output] * efficiency[output] * drive[batch, 0, output].item()
        return signal

    errors = {name: getattr(static, name)[0].numpy() for name in static.__dataclass_fields__}
    for batch in range(2):
        difference = path(positive[0].numpy(), errors["darkness_positive"], errors["weight_factor_positive"],
                          errors["input_efficiency_positive"], errors["pbs_leakage_positive"], batch) - path(
            negative[0].numpy(), errors["darkness_negative"], errors["weight_factor_negative"],
            errors["input_efficiency_negative"], errors["pbs_leakage_negative"], batch)
        expected = difference.copy()
        for output in range(6):
            if output + 1 < 6:
                expected[output] += errors["crosstalk_to_earlier"][output + 1] * difference[output + 1]
            if output >= 1:
                expected[output] += errors["crosstalk_to_later"][output - 1] * difference[output - 1]
        np.testing.assert_allclose(result[batch, 0], expected, rtol=1e-12, atol=1e-13)


def test_module_matrices_reproduce_the_optical_model_with_every_effect_on_and_off():
    generator = torch.Generator().manual_seed(11)
    positive, negative = random_tiles(generator, 3, 48, 48)
    positive[:, 30:, :] = 0.0  # an unused region: only darkness / leakage / crosstalk reach it
    negative[:, 30:, :] = 0.0
    drive = torch.randn(5, 3, 48, generator=generator, dtype=DTYPE)
    everything = enabled("slm_darkness", "weight_error", "input_efficiency", "pd_crosstalk", "pbs_crosstalk",
                         weight_error={"relative_std": 0.05}, input_efficiency={"dead_channels": [3]})
    for nonidealities in (NonIdealities(), everything):
        static = sample_static_errors(nonidealities, 3, 48)
        matrices = module_matrices(positive, negative, nonidealities, static)
        expected = optical_outputs(drive, positive, negative, nonidealities, static)
        np.testing.assert_allclose(torch.einsum("mpq,bmq->bmp", matrices, drive).numpy(), expected.numpy(),
                                   rtol=0, atol=1e-12)
    assert torch.equal(module_matrices(positive, negative, NonIdealities(), static), positive - negative)


def test_weight_error_has_unit_mean_and_the_stated_relative_std():
    relative_std = 0.03
    nonidealities = enabled("weight_error", weight_error={"relative_std": relative_std})
    static = sample_static_errors(nonidealities, 1, 48)
    transmission = torch.full((1, 48, 48), 0.5, dtype=DTYPE)
    # One-hot drives read out the realised transmissions column by column.
    drive = torch.eye(48, dtype=DTYPE)[:, None, :]
    realised = optical_outputs(drive, transmission, torch.zeros_like(transmission), nonidealities, static)
    factors = (realised / 0.5).flatten()
    count = factors.numel()
    assert abs(float(factors.mean()) - 1.0) < 4.0 * relative_std / math.sqrt(count)
    assert abs(float(factors.std()) / relative_std - 1.0) < 4.0 / math.sqrt(2.0 * count)


def test_read_noise_steady_state_variance_of_a_scalar_loop():
    alpha, std, chains = 0.6, 0.02, 20000
    nonidealities = enabled("read_noise", read_noise={"std": std})
    static = sample_static_errors(nonidealities, 1, 1)
    zero = torch.zeros(1, 1, dtype=DTYPE)
    generator = torch.Generator().manual_seed(5)
    state = torch.zeros(chains, 1, dtype=DTYPE)
    for _ in range(60):  # alpha^60 ~ 5e-14: the start is forgotten
        state = loop_iteration(state, zero, zero, alpha, 0.0, 0.0, nonidealities, static, generator)
    expected = std**2 / (1.0 - alpha**2)
    variance = float(state.pow(2).mean())  # mean is zero by symmetry
    assert abs(variance / expected - 1.0) < 5.0 * math.sqrt(2.0 / chains)


def test_offset_shifts_a_linear_scalar_fixed_point_by_the_linearised_amount():
    alpha, beta, transmission = 0.4, 0.5, 0.8
    nonidealities = enabled("offsets", offsets={"std": 1e-4})
    static = sample_static_errors(nonidealities, 1, 1)
    offset = float(static.offsets[0, 0])
    assert offset != 0.0
    positive, negative = torch.full((1, 1), transmission, dtype=DTYPE), torch.zeros(1, 1, dtype=DTYPE)
    state = torch.zeros(1, 1, dtype=DTYPE)
    for _ in range(200):
        state = loop_iteration(state, positive, negative, alpha, beta, 0.0, nonidealities, static)
    # tanh'(0) = 1; the cubic term changes the shift only at relative order offset^2.
    expected = offset / (1.0 - alpha - beta * transmission)
    assert abs(float(state[0, 0]) / expected - 1.0) < 1e-6


def test_same_seed_same_results_and_different_seed_differs():
    names = [name for name in ENTRIES if name != "saturation"]
    first, second, other = enabled(*names, seed=11), enabled(*names, seed=11), enabled(*names, seed=12)
    static = [sample_static_errors(settings, 2, 16) for settings in (first, second, other)]
    for field_name in static[0].__dataclass_fields__:
        assert torch.equal(getattr(static[0], field_name), getattr(static[1], field_name))
    assert not torch.equal(static[0].offsets, static[2].offsets)
    transmission = torch.full((16, 16), 0.1, dtype=DTYPE)
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(3)
        runs.append(loop_iteration(torch.zeros(3, 16, dtype=DTYPE), transmission, 0.5 * transmission, 0.5, 1.0,
                                   0.2, first, static[0], generator))
    assert torch.equal(runs[0], runs[1])


def test_switching_one_effect_never_changes_the_others_draws():
    base = sample_static_errors(enabled("pd_crosstalk", seed=4), 1, 12)
    changed = sample_static_errors(enabled("pd_crosstalk", "weight_error", seed=4,
                                           weight_error={"relative_std": 0.2}), 1, 12)
    assert torch.equal(base.crosstalk_to_earlier, changed.crosstalk_to_earlier)
    assert torch.equal(base.offsets, changed.offsets)


def test_continuous_time_without_noise_converges_to_the_discrete_fixed_point():
    names = [name for name in ENTRIES if name != "read_noise"]
    nonidealities = enabled(*names)
    static = sample_static_errors(nonidealities, 1, 48)
    generator = torch.Generator().manual_seed(6)
    weights = 2.0 * torch.rand(48, 48, generator=generator, dtype=DTYPE) - 1.0
    positive, negative = weights.clamp(min=0.0), (-weights).clamp(min=0.0)
    # Efficiency, crosstalk and gain raise the norm by < 2.5x, so beta keeps F a contraction (Lipschitz < 0.65).
    alpha, beta = 0.3, 0.35 / (2.5 * float(torch.linalg.matrix_norm(weights, ord=2)))
    injection = torch.rand(2, 48, generator=generator, dtype=DTYPE) - 0.5
    state = torch.zeros(2, 48, dtype=DTYPE)
    for _ in range(400):
        state = loop_iteration(state, positive, negative, alpha, beta, injection, nonidealities, static)
    residual = relaxed_operator(state, positive, negative, alpha, beta, injection, nonidealities, static) - state
    assert float(residual.abs().max()) < 1e-12
    readout = continuous_time_solve(torch.zeros(2, 48, dtype=DTYPE), positive, negative, alpha, beta, injection,
                                    nonidealities, static, acquisition=Acquisition(repeats=2))
    np.testing.assert_allclose(readout.numpy(), state.numpy(), rtol=0, atol=1e-9)


def test_continuous_time_read_noise_is_averaged_down():
    nonidealities = enabled("read_noise", read_noise={"std": 0.05})
    static = sample_static_errors(nonidealities, 1, 1)
    zero = torch.zeros(1, 1, dtype=DTYPE)
    generator = torch.Generator().manual_seed(8)
    readout = continuous_time_solve(torch.zeros(4000, 1, dtype=DTYPE), zero, zero, 0.0, 0.0, 0.0,
                                    nonidealities, static, generator, Acquisition(repeats=5))
    # White noise held per sample and low-passed (tau << sample period): each sample ~ std, 5 x ~23 averaged.
    acquisition = Acquisition()
    averaged = len(acquisition.window_sample_indices()) * acquisition.repeats
    assert 0.5 * 0.05 / math.sqrt(averaged) < float(readout.std()) < 1.5 * 0.05 / math.sqrt(averaged)
    assert acquisition.time_constant == pytest.approx(1.0 / (2.0 * math.pi * 5e6))


def test_algebraic_sigmoid_has_unit_slope_at_zero_and_limits_plus_minus_one():
    nonidealities = enabled("nonlinearity", nonlinearity={"exponent": 4.265})
    z = torch.tensor([0.0], dtype=DTYPE, requires_grad=True)
    (slope,) = torch.autograd.grad(activation(z, nonidealities).sum(), z)
    assert float(slope) == pytest.approx(1.0, abs=1e-12)
    large = activation(torch.tensor([-1e6, 1e6], dtype=DTYPE), nonidealities)
    np.testing.assert_allclose(large.numpy(), [-1.0, 1.0], atol=1e-9)
    assert float(activation(torch.tensor([1.0], dtype=DTYPE), nonidealities)) == pytest.approx(2.0 ** (-1 / 4.265))
    assert float(activation(torch.tensor([1.0], dtype=DTYPE), NonIdealities())) == pytest.approx(math.tanh(1.0))


def test_saturation_and_injection_clip():
    nonidealities = enabled("saturation", "injection_clip", saturation={"low": -3.0, "high": 2.0},
                            injection_clip={"limit": 1.3})
    static = sample_static_errors(nonidealities, 1, 2)
    zero = torch.zeros(2, 2, dtype=DTYPE)
    state = torch.tensor([[10.0, -10.0]], dtype=DTYPE)
    result = loop_iteration(state, zero, zero, 1.0, 0.0, torch.tensor([5.0, -0.5], dtype=DTYPE), nonidealities,
                            static)
    np.testing.assert_allclose(result.numpy(), [[2.0, -3.0]])
    injected = loop_iteration(torch.zeros(1, 2, dtype=DTYPE), zero, zero, 0.0, 0.0,
                              torch.tensor([5.0, -0.5], dtype=DTYPE), nonidealities, static)
    np.testing.assert_allclose(injected.numpy(), [[1.3, -0.5]])


def test_from_mapping_reads_the_nested_form_and_rejects_unknown_entries():
    settings = NonIdealities.from_mapping({
        "slm_darkness": {"enabled": True, "floor": 0.03},
        "input_efficiency": {"enabled": False, "minimum": 0.4, "maximum": 1.2, "dead_channels": [8, 9]},
        "seed": 5,
    })
    assert settings.slm_darkness.enabled and settings.slm_darkness.floor == 0.03
    assert settings.input_efficiency.dead_channels == (8, 9) and not settings.input_efficiency.enabled
    assert settings.seed == 5 and not settings.read_noise.enabled
    assert replace(settings, seed=6).seed == 6
    with pytest.raises(AdmcError):
        NonIdealities.from_mapping({"flux_capacitor": {"enabled": True}})
    with pytest.raises(AdmcError):
        NonIdealities.from_mapping({"read_noise": {"enabled": True, "sigma": 0.1}})


def test_read_noise_needs_a_generator():
    nonidealities = enabled("read_noise")
    static = sample_static_errors(nonidealities, 1, 1)
    zero = torch.zeros(1, 1, dtype=DTYPE)
    with pytest.raises(AdmcError):
        loop_iteration(torch.zeros(1, 1, dtype=DTYPE), zero, zero, 0.5, 0.0, 0.0, nonidealities, static)


def test_quick_calibration_sweep_with_the_fitted_figures_lands_near_the_paper():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "aoc_calibration_sweep.py"
    spec = importlib.util.spec_from_file_location("aoc_calibration_sweep", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    report = module.run(module.QUICK, do_fit=False)
    assert report["open_loop"]["count"] == 10 * 6 * 7 and report["closed_loop"]["count"] == 100
    assert 0.012 <= report["open_loop"]["mean"] <= 0.018
    assert 0.006 <= report["closed_loop"]["mean"] <= 0.012
    # With no residual effects the twin must reproduce its calibrated model (up to the solve's transient).
    perfect = module.Residuals(read_noise_std=0.0, weight_error_std=0.0, offset_residual_std=0.0)
    open_values, _ = module.open_loop(perfect, module.QUICK, decompose=False)
    closed_values, _ = module.closed_loop(replace(perfect), module.Sizes(closed_loop=20, repeats=1), False)
    assert float(open_values.max()) < 1e-12 and float(closed_values.max()) < 1e-6
