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


@pytest.mark.parametrize("kind", ["complex", "real", "on a line"])
def test_hull_vertices_give_the_single_alpha_maximum_of_every_eigenvalue(kind: str) -> None:
    """``solve_global`` maximises |1 − u(1 − λ)| over the hull's vertices only: the same maximum at every u."""
    from admc.passes.alpha_problem import GRID_POINTS, HULL_FROM, extreme_points

    rng = np.random.default_rng({"complex": 0, "real": 1, "on a line": 2}[kind])
    values = rng.standard_normal(HULL_FROM + 500)
    if kind == "complex":
        values = values + 1j * rng.standard_normal(values.size)
    elif kind == "on a line":
        values = values * (1 + 1j)
    values = np.concatenate([values, [0.0]])
    kept = extreme_points(values)
    assert kept.size < values.size
    grid = np.linspace(0.01, 1.0, GRID_POINTS)[:, None]
    every = np.max(np.abs(1.0 - grid * (1.0 - values[None, :])), axis=1)
    assert np.array_equal(every, np.max(np.abs(1.0 - grid * (1.0 - kept[None, :])), axis=1))


@pytest.mark.parametrize("seed", range(3))
def test_a_fold_input_mlp_is_a_cycle_with_its_state_as_a_tail(seed: int) -> None:
    """A standard MLP folded for a machine without linear channels: the hidden layers form the cycle and the
    state hangs off it (written, never read). The cycle formula with the tail's |1 − u| equals the dense radius."""
    from models import StandardMlp, example_inputs, seeded

    from admc.compiler.driver import load_source
    from admc.compiler.packing import pack_for_target
    from admc.ir.program import CLOSED, Phase
    from admc.passes.alpha_cycle import block_cycle, tail_radius
    from admc.passes.canonicalize import canonicalize
    from admc.passes.loop_jacobian import loop_matrix

    module = seeded(StandardMlp(hidden=(6, 5)), seed)
    source = load_source(module, example_inputs())
    program = pack_for_target(canonicalize(source.graph, ("tanh",), "test"), linear_channels=False)
    phase = Phase(CLOSED, 0.5, 1.0, ())
    rng = np.random.default_rng(seed)
    slopes = rng.uniform(0.1, 1.0, (2, program.size))
    cycle = block_cycle(program, phase, slopes)
    assert cycle is not None and cycle.tails, "the folded program should be a cycle with a tail"
    group_u = {group.name: rng.uniform(0.05, 1.0) for group in program.groups}
    u = np.concatenate([np.full(group.size, group_u[group.name]) for group in program.groups])
    matrix = loop_matrix(program, phase).toarray()
    dense = max(np.max(np.abs(np.linalg.eigvals(np.eye(program.size) - u[:, None] * (np.eye(program.size)
                                                                                     - matrix * s[None, :]))))
                for s in slopes)
    ordered = np.array([group_u[name] for name in cycle.groups])
    radius = max(float(blockwise_radius(cycle, ordered)), tail_radius(cycle, u))
    assert radius == pytest.approx(dense, rel=1e-8)


def test_cycle_products_are_bounded_by_their_work_and_each_kept_one_is_exact(monkeypatch) -> None:
    """Above ``CYCLE_WORK`` the α pass takes the cycle eigenvalues of fewer linearisations (a 36M-weight
    program's product costs 18 GFLOP): the products it keeps are the full computation's, bit for bit, the
    manifest's notes say how many were kept, and the choice still passes the acceptance."""
    from block_programs import random_cycle_program

    from admc.ir.program import tabulate_static_injection
    from admc.passes import alpha_selection
    from admc.passes.step_phases import build_schedule

    program = random_cycle_program((6, 6), 3, 1.0)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, 5))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    capabilities = alpha_selection.AlphaCapabilities(0.0, 0.99, False, 0.0, settle_tolerance=1e-10)
    products: list[tuple[int, bytes]] = []
    original = alpha_selection.block_cycle

    def recording(program, phase, slopes):
        cycle = original(program, phase, slopes)
        products.extend((row.size, row.tobytes()) for row in np.atleast_2d(slopes))
        return cycle

    monkeypatch.setattr(alpha_selection, "block_cycle", recording)
    full = alpha_selection.select_alpha(program, schedule, capabilities, "auto")
    every = set(products)
    products.clear()
    monkeypatch.setattr(alpha_selection, "CYCLE_WORK", 1)
    bounded = alpha_selection.select_alpha(program, schedule, capabilities, "auto")
    assert alpha_selection.cycle_products_allowed(program) == 1
    assert 0 < len(products) < len(every) and set(products) <= every
    assert any(note.startswith("block cycle: 1 of ") for note in bounded.notes)
    assert not any(note.startswith("block cycle:") for note in full.notes)
    assert bounded.acceptance.settled


@pytest.mark.parametrize("seed", range(3))
def test_a_folded_blocks_low_rank_gives_the_cycle_eigenvalues_of_the_full_product(seed: int, monkeypatch) -> None:
    """A fold-input MLP's feedback block V·W has rank d: the cycle's eigenvalues come from a d × d product
    instead of the hidden width's (an H³ eigenproblem at scale). They equal the full product's (its others
    are 0), and a low-rank factor that no longer holds (a pass changed the matrix) is not used."""
    from dataclasses import replace

    from models import StandardMlp, example_inputs, seeded

    from admc.compiler.driver import load_source
    from admc.compiler.packing import pack_for_target
    from admc.ir.program import CLOSED, Phase
    from admc.passes import alpha_cycle
    from admc.passes.canonicalize import canonicalize

    module = seeded(StandardMlp(hidden=(9, 7)), seed)
    program = pack_for_target(canonicalize(load_source(module, example_inputs()).graph, ("tanh",), "test"),
                              linear_channels=False)
    assert any(block.low_rank is not None for block in program.blocks)
    full = replace(program, blocks=[replace(block, low_rank=None) for block in program.blocks])
    phase = Phase(CLOSED, 0.5, 1.0, ())
    slopes = np.random.default_rng(seed).uniform(0.1, 1.0, (2, program.size))
    calls = []
    original = alpha_cycle._cycle_products

    def counting(*arguments, **options):
        calls.extend([options.get("skip_last", False)] * arguments[3].shape[0])  # one per row of slopes
        return original(*arguments, **options)

    monkeypatch.setattr(alpha_cycle, "_cycle_products", counting)
    narrow = alpha_cycle.block_cycle(program, phase, slopes).eigenvalues
    assert calls == [True, True]
    wide = alpha_cycle.block_cycle(full, phase, slopes).eigenvalues
    stale = replace(program, blocks=[replace(block, matrix=1.01 * block.matrix) if block.low_rank is not None
                                     else block for block in program.blocks])
    calls.clear()
    alpha_cycle.block_cycle(stale, phase, slopes)
    assert calls == [False, False]

    def ordered(values: np.ndarray) -> np.ndarray:
        return values[np.lexsort((values.imag, np.round(values.real, 9)))]

    for left, right in zip(narrow, wide, strict=True):
        np.testing.assert_allclose(ordered(left), ordered(right), atol=1e-10)
