"""Models trained with a machine's own σ: the algebraic sigmoid u / (1 + |u|^c)^(1/c) written out in elementary
ops is recognised (ONNX and torch.export, divided or multiplied form), compiles exactly on the ideal target,
and on aoc-48 (whose LEDs are driven with that σ at the calibrated c) the twin's σ is the program's own, so the
σ shape costs nothing; other exponents and other chains are refused by node.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models import STATE_SIZE, AdmForm, example_inputs, export_onnx, export_pt2, seeded

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build, load_source
from admc.core.errors import AdmcError
from admc.ir.adm import accepts, activate, activation_slope, algebraic_sigmoid, sigmoid_exponents
from admc.passes.canonicalize import canonicalize
from admc.passes.loop_jacobian import slope_bounds, slopes
from admc.runtime.executor import IdealExecutor
from admc.runtime.reference import run_reference
from admc.runtime.simulate import simulate
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
from admc.targets.loader import load_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

MACHINE = float(load_target("aoc-48").nonidealities.nonlinearity.exponent)


class SigmoidAdm(AdmForm):
    """ADM form with σ the algebraic sigmoid, as a user writes it in torch."""

    def __init__(self, exponent: float = MACHINE, form: str = "div", outer: float | None = None,
                 one: float = 1.0) -> None:
        super().__init__((12, 10))
        self.exponent, self.form, self.one = exponent, form, one
        self.outer = 1.0 / exponent if outer is None else outer

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        if self.form == "div":
            return h / (self.one + h.abs() ** self.exponent) ** self.outer
        return h * (self.one + torch.abs(h) ** self.exponent) ** (-self.outer)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(self.sigma(h)) + t[:, None] * time_vector
        return h


def write(module: torch.nn.Module, path: Path, file_format: str) -> Path:
    return export_onnx(module, path.with_suffix(".onnx")) if file_format == "onnx" else export_pt2(
        module, path.with_suffix(".pt2"))


def test_names_exponents_and_slopes() -> None:
    """A description's c and a float32 export's (c, e) name the same σ for a machine; σ' is the derivative
    (central differences) and at most 1, the slope bound the certificates use."""
    declared = algebraic_sigmoid(MACHINE)
    exported = algebraic_sigmoid(float(np.float32(MACHINE)), float(np.float32(1.0 / MACHINE)))
    assert declared != exported and accepts((declared,), exported) and not accepts(("tanh",), exported)
    assert not accepts((algebraic_sigmoid(3.0),), exported) and accepts(("algebraic_sigmoid",), exported)
    assert sigmoid_exponents(declared) == (MACHINE, 1.0 / MACHINE)
    argument = np.linspace(-4, 4, 801)
    for name in (declared, exported, algebraic_sigmoid(2.0)):
        step = 1e-6
        numeric = (activate(name, argument + step) - activate(name, argument - step)) / (2 * step)
        np.testing.assert_allclose(activation_slope(name, argument), numeric, atol=1e-8)
        assert np.all(activation_slope(name, argument) <= 1.0 + 1e-7)
    written_out = argument / (1 + np.abs(argument) ** MACHINE) ** (1 / MACHINE)
    np.testing.assert_allclose(activate(declared, argument), written_out, rtol=1e-15)
    for bad in ((0.0, None), (-1.0, None), (4.0, 0.5)):
        with pytest.raises(ValueError):
            algebraic_sigmoid(*bad)


@pytest.mark.parametrize("file_format", ("onnx", "pt2"))
@pytest.mark.parametrize("form", ("div", "mul"))
def test_both_exports_of_both_forms_are_recognised_exactly(tmp_path: Path, form: str, file_format: str) -> None:
    """Float64 modules: the canonical network equals the module to rounding, every hidden node reads the
    algebraic sigmoid, and nothing of the written-out chain is left."""
    module = seeded(SigmoidAdm(form=form), 3).double()
    inputs = tuple(value.double() for value in example_inputs())
    path = export_onnx(module, tmp_path / "m.onnx", inputs) if file_format == "onnx" else export_pt2(
        module, tmp_path / "m.pt2", inputs)
    network = canonicalize(load_source(path).graph)
    assert {node.activation for node in network.nodes} == {algebraic_sigmoid(MACHINE)}
    x = np.random.default_rng(0).standard_normal((16, STATE_SIZE)) * 2
    t = np.random.default_rng(1).random(16)
    with torch.no_grad():
        expected = module(torch.as_tensor(x), torch.as_tensor(t)).numpy()
    np.testing.assert_allclose(network.velocity(x, t), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("change", ({"outer": 1 / 3.0}, {"one": 2.0}))
def test_chains_that_are_not_the_sigmoid_are_refused_by_node(tmp_path: Path, change: dict) -> None:
    path = write(seeded(SigmoidAdm(**change), 3), tmp_path / "m", "onnx")
    with pytest.raises(AdmcError, match=r"node '.*' op (Abs|Div|Pow|Add)"):
        canonicalize(load_source(path).graph)


@pytest.mark.parametrize("solver", ("implicit-euler", "crank-nicolson"))
def test_ideal_programs_equal_the_reference(tmp_path: Path, solver: str) -> None:
    path = write(seeded(SigmoidAdm(), 3), tmp_path / "m", "onnx")
    noise = np.random.default_rng(2).standard_normal((8, STATE_SIZE))
    bundle = build(path, tmp_path / "b", target="ideal", solver=solver, steps=4)
    expected = run_reference(path, noise, solver, np.linspace(0, 1, 5)).samples
    samples = simulate(bundle, noise, None, ideal=True)
    assert np.max(np.abs(samples - expected)) / np.sqrt(np.mean(expected ** 2)) <= 1e-6


class GuidedRelu(torch.nn.Module):
    """A class-conditional ReLU network: the guided copy's hidden chain must keep ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(5, 12)
        self.first, self.second, self.last = (torch.nn.Linear(STATE_SIZE, 12), torch.nn.Linear(12, 12),
                                              torch.nn.Linear(12, STATE_SIZE))

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x) + t[:, None] + self.embedding(label))
        return self.last(torch.relu(self.second(h)))


def test_the_guided_copy_keeps_each_nodes_activation(tmp_path: Path) -> None:
    """Regression: the null-condition chain was built with tanh whatever the network used."""
    module = seeded(GuidedRelu(), 4)
    labels = torch.tensor([0, 1, 2, 3])
    path = export_onnx(module, tmp_path / "relu.onnx", (*example_inputs(), labels), ("x", "t", "label"))
    noise = np.random.default_rng(3).standard_normal((8, STATE_SIZE))
    conditions = {"label": np.arange(8) % 4}
    null = {"label": np.asarray(4)}
    bundle = build(path, tmp_path / "b", target="ideal", solver="crank-nicolson", steps=4, guidance=3.0,
                   null_conditions=null)
    expected = run_reference(path, noise, "crank-nicolson", np.linspace(0, 1, 5), conditions=conditions, guidance=3.0,
                             null_conditions=null).samples
    samples = simulate(bundle, noise, conditions, ideal=True)
    assert np.max(np.abs(samples - expected)) / np.sqrt(np.mean(expected ** 2)) <= 1e-6


def twin_error(bundle: Bundle, effects, noise: np.ndarray) -> float:
    program, schedule, alpha = bundle_program(bundle)
    ideal = IdealExecutor(program, alpha).run(schedule, noise).trajectory[-1]
    final = AocTwin(bundle, effects, repeats=1).run(noise).trajectory[-1]
    return float(np.sqrt(np.mean((final - ideal) ** 2) / np.mean(ideal ** 2)))


def test_aoc_runs_its_own_sigma_exactly(tmp_path: Path) -> None:
    """aoc-48 with only its σ shape on: a model trained with that σ lands on its program (the twin's s is the
    program's σ), a tanh model of the same weights does not; nothing is σ-compensated; every effect off, the
    twin is the program; the certificates' slope bound holds on recorded states."""
    sigmoid = Bundle(build(write(seeded(SigmoidAdm(), 3), tmp_path / "s", "onnx"), tmp_path / "sb",
                           solver="implicit-euler", steps=4))
    tanh = Bundle(build(export_onnx(seeded(AdmForm((12, 10)), 3), tmp_path / "t.onnx"), tmp_path / "tb",
                        solver="implicit-euler", steps=4))
    noise = np.random.default_rng(4).standard_normal((16, STATE_SIZE))
    default = nonidealities_of(sigmoid)
    only_shape = replace(all_off(default), nonlinearity=default.nonlinearity)
    # The machine's c is the description's 4.265, the float32 export's 4.2649999 (relative 3e-8).
    assert twin_error(sigmoid, only_shape, noise) < 1e-7
    assert twin_error(tanh, only_shape, noise) > 1e-3
    assert twin_error(sigmoid, all_off(default), noise) < 1e-9
    assert "sigma_compensation" not in sigmoid.manifest["aoc"] and "sigma_compensation" in tanh.manifest["aoc"]
    program, _, _ = bundle_program(sigmoid)
    states = np.random.default_rng(5).standard_normal((64, program.size)) * 2
    assert np.all(slopes(program, states) <= slope_bounds(program)[None, :] + 1e-12)


def test_other_exponents_are_refused_where_the_machine_cannot_compute_them(tmp_path: Path, capsys) -> None:
    path = write(seeded(SigmoidAdm(exponent=3.0), 3), tmp_path / "m", "onnx")
    for target in ("aoc-48", "rram-128"):
        output = tmp_path / f"out-{target}"
        assert main(["build", str(path), "-o", str(output), "--target", target]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "node '" in error and "algebraic_sigmoid" in error, error
        assert not output.exists()
    assert build(path, tmp_path / "ideal", target="ideal", steps=2).exists()  # digital: any exponent


HW48 = SHIPPED_CALIBRATIONS["hw48"]


def test_a_measured_machine_matches_its_own_sigma_better_than_tanh(tmp_path: Path) -> None:
    """Calibrated build (hw48): the operating points fit each σ channel to the σ its program asks for; the
    machine's curve, the makers' generalised algebraic sigmoid, fits the algebraic-sigmoid model closer than
    the tanh model of the same weights."""
    errors = {}
    for name, module in (("sigmoid", SigmoidAdm()), ("tanh", AdmForm((12, 10)))):
        path = write(seeded(module, 3), tmp_path / name, "onnx")
        bundle = Bundle(build(path, tmp_path / f"{name}-bundle", solver="implicit-euler", steps=4,
                              calibration=HW48))
        points = bundle.manifest["calibration"]["operating_points"]
        assert points["channels_fitted"] > 0
        assert points["sigma_error_fitted"] < points["sigma_error_small_signal"]
        errors[name] = points["sigma_error_fitted"]
    assert errors["sigmoid"] < errors["tanh"], errors
