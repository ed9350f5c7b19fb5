"""The block-wise radius and its grid search skip work without changing any answer (issue 25).

``blockwise_radius`` skips cycle eigenvalues that Rouché's theorem rules out; ``search_blockwise`` solves a
working set of eigenvalues per grid and checks the winner against all of them. Both are compared here with the
plain computation (every companion problem solved for every eigenvalue and grid point), which they must match
bit for bit: the bundles depend on the exact choice.
"""

from __future__ import annotations

import numpy as np
import pytest

from admc.passes import alpha_cycle
from admc.passes.alpha_cycle import BlockCycle, blockwise_radius, search_blockwise


def _every_eigenvalue(cycle: BlockCycle, u: np.ndarray) -> np.ndarray:
    values = cycle.eigenvalues.reshape(-1)
    return alpha_cycle._companion_radius(u, np.broadcast_to(values, (u.shape[0], values.size)))


def _plain_search(cycle: BlockCycle, lower: np.ndarray, upper: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The coordinate descent as it was before the working set: every eigenvalue at every grid point."""
    u = np.clip(start, lower, upper)
    best = float(_every_eigenvalue(cycle, u[None, :])[0])
    for _ in range(alpha_cycle.SWEEPS):
        improved = False
        for group in range(u.size):
            if upper[group] <= lower[group]:
                continue
            grid = np.unique(np.concatenate([np.geomspace(max(lower[group], 1e-6), upper[group],
                                                          alpha_cycle.GRID_POINTS), [lower[group], upper[group]]]))
            candidates = np.repeat(u[None, :], grid.size, axis=0)
            candidates[:, group] = grid
            radii = _every_eigenvalue(cycle, candidates)
            choice = int(np.argmin(radii))
            if radii[choice] < best - 1e-12:
                best, u, improved = float(radii[choice]), candidates[choice], True
        if not improved:
            break
    return u


def _random_cycle(rng: np.random.Generator, groups: int, count: int) -> BlockCycle:
    # A disc of eigenvalues (as random weight products give) with a few large ones, and real ones.
    values = (rng.standard_normal(count) + 1j * rng.standard_normal(count) * rng.random()) * rng.random(count) ** 2
    values[: count // 4] = values[: count // 4].real
    return BlockCycle([f"g{index}" for index in range(groups)], [slice(index, index + 1) for index in range(groups)],
                      2.0 * values[None, :])


@pytest.mark.parametrize("seed", range(6))
def test_pruned_radius_equals_every_companion_problem(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cycle = _random_cycle(rng, int(rng.integers(1, 6)), int(rng.integers(20, 400)))
    u = rng.random((25, len(cycle.groups))) * 1.2 + 1e-3
    assert np.array_equal(blockwise_radius(cycle, u), _every_eigenvalue(cycle, u))


@pytest.mark.parametrize("seed", range(6))
def test_working_set_search_chooses_what_the_full_grid_chooses(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    groups = int(rng.integers(2, 6))
    cycle = _random_cycle(rng, groups, int(rng.integers(40, 300)))
    lower = rng.random(groups) * 0.3
    upper = lower + rng.random(groups) * 0.9
    start = rng.random(groups)
    assert np.array_equal(search_blockwise(cycle, lower, upper, start), _plain_search(cycle, lower, upper, start))
