"""The continuous solver and ReLU as an IR activation, checked against independent computations.

- the reference's ``continuous`` solver against the closed-form solution of a linear time-varying flow
  (matrix exponential of the augmented system);
- a program's velocity (one feed-forward pass over its groups) against the canonical network's, for the
  direct and the fold-input layouts, with ReLU and tanh nodes;
- ReLU models build and verify on the ideal target with every solver, continuous included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from models import ResidualMlp, SinusoidalTime, StandardMlp, export_onnx, seeded
from scipy.linalg import expm

from admc.cli import main
from admc.compiler.driver import BuildOptions, build, compile_source, load_source
from admc.ir.adm import RELU, TANH
from admc.passes.canonicalize import canonicalize
from admc.runtime.continuous import ProgramVelocity, integrate_continuous
from admc.runtime.reference import integrate
from admc.targets.loader import load_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


class MixedMlp(torch.nn.Module):
    """ReLU and tanh layers in one network, time concatenated with the state."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.last = torch.nn.Linear(3, 12), torch.nn.Linear(12, 10), torch.nn.Linear(10, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.first(torch.cat([x, t[:, None]], 1)))
        return self.last(torch.tanh(self.second(hidden)))


def test_continuous_reference_matches_the_closed_form_of_a_linear_flow() -> None:
    rng = np.random.default_rng(0)
    matrix = 0.8 * rng.standard_normal((3, 3))
    drift = rng.standard_normal(3)

    def velocity(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return x @ matrix.T + t[:, None] * drift

    noise = rng.standard_normal((5, 3))
    grid = np.linspace(0.0, 1.0, 6)
    result = integrate(velocity, noise, "continuous", grid)
    # Augmented state (x, t, 1): d/dt (x, t, 1) = [[A, b, 0], [0, 0, 1], [0, 0, 0]] (x, t, 1).
    augmented = np.zeros((5, 5))
    augmented[:3, :3], augmented[:3, 3], augmented[3, 4] = matrix, drift, 1.0
    for index, time in enumerate(grid):
        start = np.concatenate([noise, np.zeros((5, 1)), np.ones((5, 1))], axis=1)
        exact = (start @ expm(augmented * time).T)[:, :3]
        np.testing.assert_allclose(result.trajectory[index], exact, rtol=0, atol=1e-9)
    assert result.solver == "continuous" and result.function_evaluations > 0


def test_integration_refuses_a_diverging_flow() -> None:
    from admc.core.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match="non-finite"):
        integrate_continuous(lambda x, t: np.where(t[:, None] > 0.5, np.inf, x), np.ones((2, 2)),
                             np.array([0.0, 1.0]))


@pytest.mark.parametrize("target", ["ideal", "no_linear"])
def test_program_velocity_equals_the_network(tmp_path: Path, target: str, no_linear_target: Path) -> None:
    model = export_onnx(seeded(MixedMlp(), 0), tmp_path / "mixed.onnx")
    source = load_source(model)
    network = canonicalize(source.graph)
    assert [node.activation for node in network.nodes] == [RELU, TANH]
    description = load_target("ideal" if target == "ideal" else no_linear_target)
    compiled = compile_source(source, description, BuildOptions(solver="continuous", steps=4))
    assert compiled.program.layout == ("direct" if target == "ideal" else "folded-input")
    velocity = ProgramVelocity(compiled.program)
    rng = np.random.default_rng(1)
    for time in (0.0, 0.37, 1.0):
        x = rng.standard_normal((16, 2))
        expected = network.velocity(x, np.full(16, time))
        np.testing.assert_allclose(velocity(x, np.array([time])), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", ["explicit-euler", "heun", "implicit-euler", "crank-nicolson", "continuous"])
def test_relu_models_verify_on_the_ideal_target(tmp_path: Path, solver: str) -> None:
    model = export_onnx(seeded(MixedMlp(), 0), tmp_path / "mixed.onnx")
    build(model, tmp_path / "bundle", target="ideal", solver=solver, steps=4)
    report_path = tmp_path / "verify.json"
    assert main(["verify", str(tmp_path / "bundle"), "--samples", "64", "--json", str(report_path)]) == 0
    link = json.loads(report_path.read_text())["links"][1]
    assert link["measured"] < (1e-7 if solver == "continuous" else 1e-9)


@pytest.mark.parametrize("make", [lambda: StandardMlp((16, 16)), lambda: ResidualMlp(16),
                                  lambda: SinusoidalTime(16)], ids=["standard", "residual", "sinusoidal"])
def test_continuous_ideal_program_matches_the_reference(tmp_path: Path, make) -> None:
    model = export_onnx(seeded(make(), 2), tmp_path / "model.onnx")
    build(model, tmp_path / "bundle", target="ideal", solver="continuous", steps=8)
    report_path = tmp_path / "verify.json"
    assert main(["verify", str(tmp_path / "bundle"), "--samples", "64", "--json", str(report_path)]) == 0
    assert json.loads(report_path.read_text())["links"][1]["measured"] < 1e-7
