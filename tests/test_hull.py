"""The convex hull the single-α minimax reduces the eigenvalues to (``passes/alpha_problem.hull_vertices``).

Checked against scipy's Qhull (an independent implementation) and by the property the reduction relies on:
the grid's minimax over the hull's vertices equals the one over every eigenvalue.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from admc.passes.alpha_problem import extreme_points, hull_vertices


@pytest.mark.parametrize("seed", range(6))
def test_the_hull_is_qhulls(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((300 + 50 * seed, 2)) * rng.uniform(0.1, 2.0, 2)
    mine = hull_vertices(points[:, 0], points[:, 1])
    assert np.array_equal(mine, np.sort(ConvexHull(points).vertices))


def test_a_flat_set_gives_its_two_ends_and_a_single_point_itself() -> None:
    x = np.linspace(-1.0, 2.0, 9)
    shuffled = np.random.default_rng(0).permutation(9)
    ends = hull_vertices(x[shuffled], 0.5 * x[shuffled])
    assert sorted(x[shuffled][ends]) == [-1.0, 2.0]
    assert np.array_equal(hull_vertices(np.array([0.3]), np.array([0.1])), [0])


def test_the_minimax_over_the_hull_is_the_minimax_over_every_eigenvalue() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        values = (rng.standard_normal(1500) + 1j * rng.standard_normal(1500)) * rng.uniform(0.2, 0.9)
        values = np.concatenate([values, values.conj()])  # a real matrix's spectrum: conjugate pairs
        kept = extreme_points(values)
        assert kept.size < values.size
        grid = np.linspace(0.01, 1.0, 801)
        every = np.max(np.abs(1.0 - grid[:, None] * (1.0 - values[None, :])), axis=1)
        hull = np.max(np.abs(1.0 - grid[:, None] * (1.0 - kept[None, :])), axis=1)
        assert np.array_equal(every, hull)
