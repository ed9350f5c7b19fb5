"""Error and distribution metrics, checked against closed forms and independent implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

import admc.verify.metrics
from admc.core.errors import AdmcError
from admc.verify.metrics import (
    gaussian_baseline,
    max_abs_error,
    median_bandwidth,
    mmd,
    nrmse,
    per_step_nrmse,
    wasserstein2,
)


def test_nrmse_definition() -> None:
    reference = np.random.default_rng(0).standard_normal((50, 3))
    assert nrmse(reference, reference) == 0.0
    assert nrmse(1.1 * reference, reference) == pytest.approx(0.1, rel=1e-12)
    assert nrmse(np.zeros(4), np.zeros(4)) == 0.0
    assert nrmse(np.ones(4), np.zeros(4)) == math.inf
    explicit = np.sqrt(np.mean((reference + 0.01 - reference) ** 2)) / np.sqrt(np.mean(reference**2))
    assert nrmse(reference + 0.01, reference) == pytest.approx(explicit, rel=1e-12)
    with pytest.raises(AdmcError, match="shapes"):
        nrmse(np.zeros(3), np.zeros(4))


def test_per_step_nrmse_and_max_abs_error() -> None:
    reference = np.random.default_rng(1).standard_normal((4, 10, 2))
    estimate = reference.copy()
    estimate[2] *= 1.5
    steps = per_step_nrmse(estimate, reference)
    np.testing.assert_allclose(steps, [0.0, 0.0, 0.5, 0.0], atol=1e-15)
    assert max_abs_error(estimate, reference) == pytest.approx(0.5 * np.max(np.abs(reference[2])), rel=1e-15)


def test_wasserstein_one_dimensional_closed_form() -> None:
    generator = np.random.default_rng(2)
    first = generator.standard_normal(40)
    second = 0.5 + 2.0 * generator.standard_normal(40)
    # In 1-D the optimal coupling of equal-size sets matches sorted order.
    expected = math.sqrt(np.mean((np.sort(first) - np.sort(second)) ** 2))
    assert wasserstein2(first[:, None], second[:, None]) == pytest.approx(expected, rel=1e-10)


def test_wasserstein_shift_and_brute_force() -> None:
    generator = np.random.default_rng(3)
    points = generator.standard_normal((30, 2))
    shift = np.array([0.3, -0.4])
    assert wasserstein2(points, points + shift) == pytest.approx(0.5, rel=1e-10)
    assert wasserstein2(points, points) == pytest.approx(0.0, abs=1e-12)
    # Equal-size uniform sets: the optimum is a permutation, so brute force is an independent answer.
    small_a, small_b = generator.standard_normal((6, 2)), generator.standard_normal((6, 2))
    costs = cdist(small_a, small_b, "sqeuclidean")
    best = min(np.mean(costs[np.arange(6), list(order)]) for order in itertools.permutations(range(6)))
    assert wasserstein2(small_a, small_b) == pytest.approx(math.sqrt(best), rel=1e-10)


def naive_mmd(a: np.ndarray, b: np.ndarray, bandwidths: list[float]) -> float:
    """Textbook unbiased MMD², written with explicit double loops over kernel matrices."""

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        squared = cdist(x, y, "sqeuclidean")
        return sum(np.exp(-squared / (2 * s**2)) for s in bandwidths)

    count_a, count_b = len(a), len(b)
    within_a = kernel(a, a)
    within_b = kernel(b, b)
    total_a = sum(within_a[i, j] for i in range(count_a) for j in range(count_a) if i != j)
    total_b = sum(within_b[i, j] for i in range(count_b) for j in range(count_b) if i != j)
    return total_a / (count_a * (count_a - 1)) + total_b / (count_b * (count_b - 1)) - 2 * kernel(a, b).mean()


def test_mmd_matches_naive_estimator_and_is_symmetric() -> None:
    generator = np.random.default_rng(4)
    a = generator.standard_normal((30, 2))
    b = generator.standard_normal((25, 2)) + 0.4
    bandwidths = [0.3, 1.0, 2.5]
    assert mmd(a, b, bandwidths) == pytest.approx(naive_mmd(a, b, bandwidths), rel=1e-12, abs=1e-14)
    assert mmd(a, b) == pytest.approx(mmd(b, a), rel=1e-12, abs=1e-15)
    median = median_bandwidth(a, b)
    assert median == pytest.approx(np.median(pdist(np.concatenate([a, b]))), rel=1e-12)
    default = [median * factor for factor in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert mmd(a, b) == pytest.approx(naive_mmd(a, b, default), rel=1e-12, abs=1e-14)


def test_mmd_separates_shifted_sets() -> None:
    generator = np.random.default_rng(5)
    a = generator.standard_normal((300, 2))
    same = generator.standard_normal((300, 2))
    shifted = generator.standard_normal((300, 2)) + np.array([1.0, 0.0])
    identical = mmd(a, a)
    same_distribution = mmd(a, same)
    different = mmd(a, shifted)
    assert abs(identical) < 0.02
    assert abs(same_distribution) < 0.02
    assert different > 10 * max(abs(same_distribution), 1e-3)
    assert mmd(a, a + np.array([2.0, 0.0])) > different


def test_mmd_blocks_do_not_change_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks force many row chunks in the kernel sum; compared with the whole-matrix form.
    monkeypatch.setattr(admc.verify.metrics, "_BLOCK_ELEMENTS", 50_000)
    generator = np.random.default_rng(6)
    a = generator.standard_normal((700, 2))
    b = generator.standard_normal((600, 2)) * 1.3
    bandwidths = np.array([0.5, 1.0])
    kernel = sum(np.exp(-cdist(a, b, "sqeuclidean") / (2 * s**2)) for s in bandwidths)
    within_a = sum(np.exp(-cdist(a, a, "sqeuclidean") / (2 * s**2)) for s in bandwidths)
    within_b = sum(np.exp(-cdist(b, b, "sqeuclidean") / (2 * s**2)) for s in bandwidths)
    expected = (
        (within_a.sum() - 2 * len(a)) / (len(a) * (len(a) - 1))
        + (within_b.sum() - 2 * len(b)) / (len(b) * (len(b) - 1))
        - 2 * kernel.mean()
    )
    assert mmd(a, b, bandwidths) == pytest.approx(expected, rel=1e-9, abs=1e-13)


def test_metric_input_errors() -> None:
    with pytest.raises(AdmcError, match="at least 2 samples"):
        mmd(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(AdmcError, match="bandwidths must be positive"):
        mmd(np.zeros((3, 2)), np.ones((3, 2)), bandwidths=[0.0])
    with pytest.raises(AdmcError, match="2 and 3 features"):
        wasserstein2(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(AdmcError, match="NaN or Inf"):
        wasserstein2(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_gaussian_baseline_fits_moments_and_is_seeded() -> None:
    generator = np.random.default_rng(7)
    reference = generator.standard_normal((4000, 2)) @ np.array([[2.0, 0.0], [1.0, 0.5]]) + np.array([1.0, -3.0])
    baseline = gaussian_baseline(reference, 20000, seed=11)
    assert baseline.shape == (20000, 2)
    np.testing.assert_array_equal(baseline, gaussian_baseline(reference, 20000, seed=11))
    assert not np.array_equal(baseline, gaussian_baseline(reference, 20000, seed=12))
    np.testing.assert_allclose(baseline.mean(axis=0), reference.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(baseline, rowvar=False), np.cov(reference, rowvar=False), atol=0.1)
