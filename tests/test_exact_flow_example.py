"""examples/conditional/exact_flow.py, the closed-form velocity the conditional example's figures are judged
against, checked by the property that defines it: the residual (x1 − x0) − u(x_t) of a conditional expectation is
uncorrelated with every function of x_t (and of the label). The same check refuses a velocity 5 % off, and the
integrated unguided flow reproduces the data."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conditional"


@pytest.fixture()
def example(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("exact_flow"), importlib.import_module("train_eight_gaussians")


def largest_correlation_in_standard_errors(residual: np.ndarray, x: np.ndarray) -> float:
    """|mean(r_d · g(x))| / its standard error, largest over components d and test functions g."""
    tests = [np.ones(x.shape[0]), x[:, 0], x[:, 1], np.tanh(2 * x[:, 0]), np.sin(3 * x[:, 1]), x[:, 0] * x[:, 1]]
    worst = 0.0
    for g in tests:
        products = residual * g[:, None]
        worst = max(worst, float(np.max(np.abs(products.mean(0)) / (products.std(0) / np.sqrt(x.shape[0])))))
    return worst


@pytest.mark.parametrize("t", [0.2, 0.6, 0.9])
@pytest.mark.parametrize("conditional", [True, False])
def test_the_velocity_is_the_conditional_expectation(example, t: float, conditional: bool) -> None:
    exact_flow, data = example
    generator = np.random.default_rng(5)
    points, labels = data.eight_gaussians(400_000, generator)
    noise = generator.standard_normal(points.shape)
    x = t * points + (1 - t) * noise
    target = points - noise
    # W = 0 is the conditional velocity; W = −1 the unconditional one (the combination is linear in W).
    velocity = exact_flow.guided_velocity(x, t, labels, 0.0 if conditional else -1.0)
    # 4.5 standard errors over 12 correlated statistics: a false alarm is rarer than 1e-4.
    assert largest_correlation_in_standard_errors(target - velocity, x) < 4.5
    assert largest_correlation_in_standard_errors(target - 1.05 * velocity, x) > 10.0


def test_the_unguided_exact_flow_reproduces_the_data(example) -> None:
    exact_flow, data = example
    noise = np.random.default_rng(3).standard_normal((2048, 2))
    labels = np.arange(2048) % data.CLASSES
    samples = exact_flow.sample(noise, labels, 0.0, steps=100)
    for label in range(data.CLASSES):
        members = samples[labels == label]
        assert np.linalg.norm(members.mean(0) - data.centres()[label]) < 4 * data.SPREAD / np.sqrt(members.shape[0])
        assert abs(members.std(0).mean() / data.SPREAD - 1) < 0.15
