"""The bound docs/alpha-selection.md proves for block-wise α, checked numerically: on a K-block cycle whose
cycle product has a real positive eigenvalue c, no α ∈ [0, 1)^K (one per block) brings the relaxed loop's
spectral radius below c^{1/K}, the α = 0 value (and none makes it contract when c ≥ 1); an eigenvalue with an
angle (c < 0) can be damped. Spectral radii come from dense eigenvalues of diag(α) + diag(1 − α) M, independent
of the cycle polynomial ``alpha_cycle.blockwise_radius`` uses, which is checked against them."""

from __future__ import annotations

import numpy as np
import pytest

from admc.passes.alpha_cycle import BlockCycle, blockwise_radius


def cycle_matrix(links: np.ndarray) -> np.ndarray:
    """Scalar K-cycle: block b reads block b − 1 with gain links[b] (cycle product = Π links)."""
    size = links.size
    matrix = np.zeros((size, size))
    for block, link in enumerate(links):
        matrix[block, (block - 1) % size] = link
    return matrix


def dense_radius(links: np.ndarray, alpha: np.ndarray) -> float:
    relaxed = np.diag(alpha) + np.diag(1.0 - alpha) @ cycle_matrix(links)
    return float(np.max(np.abs(np.linalg.eigvals(relaxed))))


def random_links(rng: np.random.Generator, blocks: int, product: float) -> np.ndarray:
    links = rng.uniform(0.3, 3.0, blocks) * rng.choice([-1.0, 1.0], blocks)
    links[-1] = product / np.prod(links[:-1])
    return links


@pytest.mark.parametrize("blocks", [2, 3, 4, 5])
def test_no_blockwise_alpha_damps_a_positive_real_cycle_eigenvalue(blocks: int) -> None:
    rng = np.random.default_rng(blocks)
    for product in (0.01, 0.2, 0.7, 0.99):
        links = random_links(rng, blocks, product)
        floor = product ** (1.0 / blocks)
        assert dense_radius(links, np.zeros(blocks)) == pytest.approx(floor, rel=1e-9)
        alphas = np.vstack([rng.uniform(0.0, 1.0, (400, blocks)),
                            rng.uniform(0.0, floor, (200, blocks)),  # the proof's first case: every α_b ≤ r
                            np.eye(blocks) * 0.9])                    # one block damped hard
        radii = np.array([dense_radius(links, alpha) for alpha in alphas])
        assert np.min(radii) >= floor - 1e-9
        # The cycle polynomial the α pass uses gives the same radii.
        cycle = BlockCycle([str(index) for index in range(blocks)], [slice(index, index + 1)
                                                                     for index in range(blocks)],
                           np.array([[product]], dtype=complex))
        assert np.allclose(blockwise_radius(cycle, 1.0 - alphas), radii, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("blocks", [2, 3, 4])
def test_no_blockwise_alpha_makes_a_cycle_with_product_above_one_contract(blocks: int) -> None:
    rng = np.random.default_rng(10 + blocks)
    links = random_links(rng, blocks, 1.3)
    radii = [dense_radius(links, alpha) for alpha in rng.uniform(0.0, 0.999, (500, blocks))]
    assert min(radii) >= 1.0 - 1e-9


@pytest.mark.parametrize("blocks", [2, 3, 4, 5])
def test_a_negative_cycle_eigenvalue_is_damped(blocks: int) -> None:
    """The bound is about angle, not size: with c = −0.7 some single α beats α = 0 (by 23 % at K = 2, 2 % at
    K = 5: the roots nearest the positive real axis sit at angle π/K), and with c = −1.5, where α = 0
    diverges, some α contracts."""
    rng = np.random.default_rng(20 + blocks)
    grid = np.linspace(0.0, 0.95, 96)
    for product, best_below in ((-0.7, 0.98 * 0.7 ** (1.0 / blocks)), (-1.5, 1.0)):
        links = random_links(rng, blocks, product)
        radii = [dense_radius(links, np.full(blocks, value)) for value in grid]
        assert radii[0] == pytest.approx(abs(product) ** (1.0 / blocks), rel=1e-9)
        assert min(radii) < best_below
