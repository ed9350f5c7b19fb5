"""The differentiable AOC twin (targets/aoc/differentiable.py): exactness with every effect off, gradients,
straight-through quantisation, seeded noise, a fine-tuning smoke test, and refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from admc.core.errors import AdmcError
from admc.targets.aoc.differentiable import (
    HardwareAwareVelocity,
    SlmQuantisation,
    adm_layers_of,
    nonidealities_of_target,
    voltage_scales_of_bundle,
)
from admc.targets.aoc.physics import NonIdealities
from admc.targets.aoc.slm import quantise, sign_split
from admc.targets.aoc.twin import all_off

STATE = 2
HIDDEN = (12, 10)


class Layer(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        self.time = nn.Parameter(torch.zeros(outputs))

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.tanh(h)) + t[:, None] * self.time


class Adm(nn.Module):
    """L_i(h, t) = W_i tanh(h) + b_i + t e_i, widths 2 → 12 → 10 → 2, seeded weights."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        widths = (STATE, *HIDDEN, STATE)
        self.layers = nn.ModuleList(Layer(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.parameters():
                fan_in = parameter.shape[-1] if parameter.dim() > 1 else 4
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) / fan_in**0.5)
        self.to(dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h, t)
        return h


def batch(seed: int = 1, size: int = 8, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, STATE, generator=generator, dtype=dtype),
            torch.rand(size, generator=generator, dtype=dtype))


def preset() -> NonIdealities:
    return nonidealities_of_target("aoc-48")


def only(**switches: bool) -> NonIdealities:
    """The aoc-48 parameters with only the named effects enabled."""
    settings = all_off(preset())
    changes = {name: dataclasses.replace(getattr(settings, name), enabled=on) for name, on in switches.items()}
    return dataclasses.replace(settings, **changes)


def ideal_twin(model: Adm) -> HardwareAwareVelocity:
    return HardwareAwareVelocity.from_module(model, nonidealities=all_off(preset()), quantisation=None)


def test_every_effect_off_equals_the_model_forward():
    model = Adm()
    x, t = batch()
    twin = ideal_twin(model)
    assert torch.allclose(twin(x, t), model(x, t), rtol=0, atol=1e-12)
    assert torch.allclose(twin.eval()(x, t), model(x, t), rtol=0, atol=1e-12)


def test_parameters_are_the_models_own():
    model = Adm()
    twin = HardwareAwareVelocity.from_module(model)
    assert {id(parameter) for parameter in twin.parameters()} == {id(parameter) for parameter in model.parameters()}
    x, t = batch()
    twin(x, t).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.any(parameter.grad != 0), name


def test_explicit_layers_of_another_adm_structure():
    sizes = (STATE, 6, STATE)
    linears = [nn.Linear(a, b).double() for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    times = [nn.Parameter(torch.full((size,), 0.3, dtype=torch.float64)) for size in sizes[1:]]
    twin = HardwareAwareVelocity.from_adm_layers(list(zip(linears, [times[0], None], strict=True)),
                                                  nonidealities=all_off(preset()), quantisation=None)
    x, t = batch()
    expected = linears[1](torch.tanh(linears[0](torch.tanh(x)) + t[:, None] * times[0]))
    assert torch.allclose(twin(x, t), expected, rtol=0, atol=1e-12)


def test_k_iterations_of_the_implicit_loop_are_the_explicit_euler_step():
    model = Adm()
    x, t = batch()
    twin = ideal_twin(model)
    delta = 0.125
    step = twin.implicit_step(x, t, delta, iterations=len(HIDDEN) + 1)
    assert torch.allclose(step, x + delta * model(x, t + delta), rtol=0, atol=1e-12)
    converged = twin.implicit_step(x, t, delta, iterations=200)
    residual = converged - (x + delta * model(converged, t + delta))
    assert float(residual.detach().abs().max()) < 1e-10


def smooth_effects() -> NonIdealities:
    """Every differentiable effect on (sigmoid, weight error, gains, offsets), noise and clamps off."""
    return only(nonlinearity=True, weight_error=True, gain_error=True, offsets=True)


@pytest.mark.parametrize("effects", ["off", "smooth"])
def test_gradients_match_finite_differences(effects: str):
    model = Adm()
    settings = all_off(preset()) if effects == "off" else smooth_effects()
    twin = HardwareAwareVelocity.from_module(model, nonidealities=settings, quantisation=None,
                                             voltage_scales=[0.5, 0.8, 0.3]).eval()
    x, t = batch(size=3)
    names = [name for name, _ in twin.named_parameters()]
    values = tuple(parameter.detach().clone().requires_grad_(True) for _, parameter in twin.named_parameters())

    def velocity(*parameters: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(twin, dict(zip(names, parameters, strict=True)), (x, t))

    def implicit(*parameters: torch.Tensor) -> torch.Tensor:
        return _implicit_call(twin, dict(zip(names, parameters, strict=True)), x, t)

    assert torch.autograd.gradcheck(velocity, values, eps=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(implicit, values, eps=1e-6, atol=1e-8)


def _implicit_call(twin: HardwareAwareVelocity, state: dict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Six closed-loop iterations of an implicit step at Δt = 1/4, with the given parameter values."""

    class Step(nn.Module):
        def __init__(self, inner: HardwareAwareVelocity):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.inner.implicit_step(x, t, 0.25, 6)

    return torch.func.functional_call(Step(twin), {f"inner.{name}": value for name, value in state.items()}, (x, t))


def quantised_rows_linear(weight: np.ndarray, bits: int) -> np.ndarray:
    """Independent row-wise quantisation to a uniform grid of 2^bits - 1 steps of max |row|."""
    scale = np.abs(weight).max(axis=1, keepdims=True)
    top = 2**bits - 1
    return np.sign(weight) * np.round(np.abs(weight) / scale * top) / top * scale


def quantised_rows_response(weight: np.ndarray, quantisation: SlmQuantisation) -> np.ndarray:
    """Row-wise: sign split, the SLM's own quantiser per path through the response, scaled back."""
    scale = np.abs(weight).max(axis=1, keepdims=True)
    positive, negative = sign_split(weight / scale)
    _, realised_positive = quantise(np.clip(positive, 0, 1), quantisation.response_positive, quantisation.bit_depth)
    _, realised_negative = quantise(np.clip(negative, 0, 1), quantisation.response_negative, quantisation.bit_depth)
    return (realised_positive - realised_negative) * scale


def model_with_weights(model: Adm, weights: list[np.ndarray]) -> Adm:
    copy = Adm()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer, weight in zip(copy.layers, weights, strict=True):
            layer.linear.weight.copy_(torch.as_tensor(weight))
    return copy


@pytest.mark.parametrize("response", ["linear", "aoc-48"])
def test_quantised_forward_uses_row_wise_quantised_weights(response: str):
    model = Adm()
    if response == "linear":
        quantisation = SlmQuantisation(bit_depth=4)
        weights = [quantised_rows_linear(layer.linear.weight.detach().numpy(), 4) for layer in model.layers]
    else:
        quantisation = SlmQuantisation.from_target("aoc-48")
        assert quantisation is not None and quantisation.bit_depth == 8
        weights = [quantised_rows_response(layer.linear.weight.detach().numpy(), quantisation)
                   for layer in model.layers]
    twin = HardwareAwareVelocity.from_module(model, nonidealities=all_off(preset()), quantisation=quantisation)
    reference = model_with_weights(model, weights)
    x, t = batch()
    output = twin(x, t)
    assert torch.allclose(output, reference(x, t), rtol=0, atol=1e-12)
    assert not torch.allclose(output, model(x, t), rtol=0, atol=1e-6)
    # Straight-through: the gradient w.r.t. W is the gradient at the quantised weights.
    output.sum().backward()
    reference(x, t).sum().backward()
    for layer, expected in zip(model.layers, reference.layers, strict=True):
        assert torch.allclose(layer.linear.weight.grad, expected.linear.weight.grad, rtol=0, atol=1e-12)


def test_without_noise_outputs_are_deterministic_and_static_errors_fixed():
    model = Adm()
    x, t = batch()
    settings = dataclasses.replace(preset(), weight_error=dataclasses.replace(preset().weight_error, enabled=True))
    twin = HardwareAwareVelocity.from_module(model, nonidealities=settings)
    first, second = twin.eval()(x, t), twin(x, t)
    assert torch.equal(first, second)  # eval(): read noise off; static errors the same across calls
    no_noise = HardwareAwareVelocity.from_module(model, nonidealities=only(weight_error=True, nonlinearity=True))
    assert torch.equal(no_noise.train()(x, t), no_noise(x, t))
    assert not torch.allclose(no_noise(x, t), model(x, t), rtol=0, atol=1e-6)
    drawn = no_noise(x, t)
    no_noise.redraw_static_errors(7)
    assert not torch.equal(no_noise(x, t), drawn)
    no_noise.redraw_static_errors(no_noise.seed)
    assert torch.equal(no_noise(x, t), drawn)


def test_same_seed_same_noisy_outputs():
    model = Adm()
    x, t = batch()

    def noisy(seed: int) -> HardwareAwareVelocity:
        return HardwareAwareVelocity.from_module(model, nonidealities=only(read_noise=True, weight_error=True),
                                                 seed=seed).train()

    one, same, other = noisy(3), noisy(3), noisy(4)
    first = one(x, t)
    assert torch.equal(first, same(x, t))
    assert not torch.equal(first, other(x, t))
    assert not torch.equal(first, one(x, t))  # fresh read noise per call
    one.reset_noise()
    assert torch.equal(first, one(x, t))
    assert float((first - model(x, t)).detach().abs().max()) < 0.2  # noise and weight error are small


def test_saturation_bounds_the_velocity_in_model_units():
    model = Adm()
    with torch.no_grad():
        model.layers[-1].linear.weight.mul_(50.0)
    settings = only(saturation=True)
    scales = [0.5, 1.0, 1.0]
    twin = HardwareAwareVelocity.from_module(model, nonidealities=settings, quantisation=None, voltage_scales=scales)
    output = twin(*batch(size=64)).detach()
    assert float(output.max()) <= settings.saturation.high / scales[0] + 1e-12
    assert float(output.min()) >= settings.saturation.low / scales[0] - 1e-12
    assert float(output.abs().max()) > 1.0  # the clamp was reached, not just trivially satisfied


def toy_data(count: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.tensor([[1.0, 1.0], [-1.0, -0.5]], dtype=torch.float32)
    choice = torch.randint(0, 2, (count,), generator=generator)
    return centres[choice] + 0.1 * torch.randn(count, 2, generator=generator)


def flow_matching_loss(velocity: nn.Module, data: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(data.shape, generator=generator)
    t = torch.rand(data.shape[0], generator=generator)
    interpolated = t[:, None] * data + (1 - t[:, None]) * noise
    return ((velocity(interpolated, t) - (data - noise)) ** 2).mean()


def test_fine_tuning_through_the_twin_decreases_the_loss():
    torch.manual_seed(0)
    model = Adm(seed=5, dtype=torch.float32)
    twin = HardwareAwareVelocity.from_module(model, seed=0)  # the aoc-48 non-idealities, 8-bit SLM

    def evaluation_loss() -> float:
        twin.eval()
        with torch.no_grad():
            generator = torch.Generator().manual_seed(99)
            return float(flow_matching_loss(twin, toy_data(2048, generator), generator))

    before = evaluation_loss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    twin.train()
    for _ in range(60):
        loss = flow_matching_loss(twin, toy_data(256, generator), generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = evaluation_loss()
    assert after < 0.8 * before


class NotAdm(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], dim=1))


class LayersWithoutLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 4), nn.Linear(4, 2)])


class ReluForward(Adm):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer.linear(torch.relu(h)) + t[:, None] * layer.time
        return h


@pytest.mark.parametrize("module, message", [
    (NotAdm(), "no non-empty 'layers' ModuleList"),
    (LayersWithoutLinear(), "no torch.nn.Linear 'linear'"),
    (ReluForward(), "differs from the ADM chain"),
])
def test_non_adm_modules_are_refused(module: nn.Module, message: str):
    with pytest.raises(AdmcError, match=message):
        HardwareAwareVelocity.from_module(module.double())


def test_broken_chains_and_scales_are_refused():
    with pytest.raises(AdmcError, match="an ADM chain maps d"):
        HardwareAwareVelocity.from_adm_layers([(nn.Linear(2, 5), None), (nn.Linear(4, 2), None)])
    with pytest.raises(AdmcError, match="voltage_scales"):
        HardwareAwareVelocity.from_module(Adm(), voltage_scales=[1.0, 2.0])
    assert len(adm_layers_of(Adm())) == len(HIDDEN) + 1


def test_voltage_scales_come_from_a_built_bundle(tmp_path):
    from admc.compiler.driver import build

    model = Adm(dtype=torch.float32).eval()
    path = build(model, tmp_path / "bundle", target="aoc-48", steps=4,
                 example_inputs=(torch.zeros(4, STATE), torch.zeros(4)))
    scales = voltage_scales_of_bundle(path)
    assert len(scales) == len(HIDDEN) + 1 and all(scale > 0 for scale in scales)
    HardwareAwareVelocity.from_module(model, voltage_scales=scales)
