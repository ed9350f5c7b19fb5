"""Exact spectrum of the relaxed loop with one α per state group, from the block cycle (no n × n eigenproblem).

When the phase's blocks form one simple cycle g_0 → g_1 → … → g_{K−1} → g_0 (the direct ADM layout), and
u_b = 1 − α_b is constant on group b, the relaxed Jacobian M = I − U + U J has eigenvalues μ with
(μ − a_b) x_b = u_b J_b x_{b−1} (a_b = 1 − u_b). Going round the cycle, x_0 = Π_b u_b / (μ − a_b) · C x_0
with C = J_{K−1} ⋯ J_0 the cycle product on the smallest group, so every eigenvalue c of C gives the K roots
of Π_b (μ − a_b) = c · Π_b u_b, and the a_b themselves are eigenvalues (kernel directions of each block).
C is d × d for the direct layout: the spectral radius for any block-wise α costs a few K × K companion
eigenproblems, vectorised over α candidates, linearisations and eigenvalues of C.

Requires: a ``BlockProgram`` and closed ``Phase``. Guarantees: ``block_cycle`` returns the cycle's groups and
each linearisation's cycle eigenvalues, or None when the blocks are not one simple cycle over every group
that a block reads (skip edges: callers fall back to the full eigenproblem). Groups a block writes but none
reads (a fold-input MLP's state) are the cycle's tails: M is block-triangular with them last, so they add
only the eigenvalues 1 − u_i (``tail_radius``);
``blockwise_radius`` is the exact spectral radius of M for block-wise u; ``search_blockwise`` minimises it by
coordinate descent over a log-spaced grid (a K-dimensional non-convex search, K = number of groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.ir.program import SCALE_CLASSES, BlockProgram, Phase, block_scale
from admc.runtime.executor import FLOAT32_FROM_WEIGHTS, stored_weights

GRID_POINTS = 48
SWEEPS = 4
LEADING = 16  # cycle eigenvalues solved first (largest modulus); the rest only where they can matter


@dataclass
class BlockCycle:
    groups: list[str]  # in cycle order, starting at the smallest group
    slices: list[slice]
    eigenvalues: np.ndarray  # [L, r] eigenvalues of the cycle product per linearisation
    # Groups the cycle writes but no block reads (the state of a fold-input MLP): M is block-triangular there, so
    # their channels add the eigenvalues 1 − u_i and nothing else (``tail_radius``).
    tails: list[slice] = field(default_factory=list)


def block_cycle(program: BlockProgram, phase: Phase, slopes: np.ndarray) -> BlockCycle | None:
    factors = {name: block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES}
    incoming: dict[str, tuple[str, np.ndarray]] = {}
    for block in program.blocks:
        factor = factors[block.scale_class]
        if factor == 0.0:
            continue
        if block.row_group in incoming:
            return None
        # × 1.0 is exact: no copy of the weights (285 MB at 36M) where the phase does not scale the block.
        matrix = block.matrix if factor == 1.0 else factor * block.matrix
        incoming[block.row_group] = (block.column_group, matrix, factor, block.low_rank)
    read = {column for column, *_ in incoming.values()}
    if not incoming or not read <= set(incoming):
        return None
    start = min(read, key=lambda name: program.group(name).size)
    order = [start]
    while True:
        previous = incoming[order[-1]][0]
        if previous == start:
            break
        if previous in order:
            return None
        order.append(previous)
    if set(order) != read:
        return None
    tails = [slice(program.group(name).offset, program.group(name).stop) for name in sorted(set(incoming) - read)]
    order = [order[0], *reversed(order[1:])]  # forward direction: g_0 → g_1 → … (g_b reads g_{b−1})
    slices = [slice(program.group(name).offset, program.group(name).stop) for name in order]
    narrow = _narrow_block(order, incoming, program.group(start).size)
    slopes = np.atleast_2d(slopes)
    if stored_weights(program) >= FLOAT32_FROM_WEIGHTS:
        # At scale the products are most of the pass: float32 halves them (a d × d cycle spectrum to ~1e-7).
        incoming = {row: (column, matrix.astype(np.float32), *rest)
                    for row, (column, matrix, *rest) in incoming.items()}
    if narrow is None:
        products = _cycle_products(order, slices, incoming, slopes, 0, np.eye(program.group(start).size))
        return BlockCycle(order, slices, np.asarray([np.linalg.eigvals(product) for product in products]), tails)
    # C = J_0 S ⋯ J_1 S has the non-zero eigenvalues of its rotation starting at the low-rank block
    # f·L·R, and those of R·S·(the rest of the cycle)·f·L, a rank × rank matrix; the other eigenvalues are 0.
    index, (left, right), factor = narrow
    eigenvalues = []
    for slope, chain in zip(slopes, _cycle_products(order, slices, incoming, slopes, index, factor * left,
                                                    skip_last=True), strict=True):
        values = np.linalg.eigvals(right @ (slope[slices[index - 1]][:, None] * chain))
        eigenvalues.append(np.concatenate([values, np.zeros(program.group(start).size - values.size)]))
    return BlockCycle(order, slices, np.asarray(eigenvalues), tails)


def _cycle_products(order: list[str], slices: list[slice], incoming: dict, slopes: np.ndarray, first: int,
                    start: np.ndarray, skip_last: bool = False) -> list[np.ndarray]:
    """``start`` carried round the cycle from group ``order[first]`` once per row of ``slopes`` [L, n]: each block
    in turn, its input channels scaled by that row's σ' (the last block left out with ``skip_last``: the caller
    applies it in factored form). The L products go side by side through one product per block, so each
    block is read once, not L times."""
    count, width = len(order) - (1 if skip_last else 0), start.shape[1]
    product = np.tile(start, (1, slopes.shape[0]))  # [rows, L · width]
    for step in range(1, count + 1):
        index = (first + step) % len(order)
        matrix = incoming[order[index]][1]
        scale = slopes[:, slices[index - 1]].T  # [rows, L]
        scaled = (product.reshape(product.shape[0], slopes.shape[0], width) * scale[:, :, None])
        product = matrix @ scaled.reshape(product.shape[0], -1).astype(matrix.dtype, copy=False)
    product = product.astype(np.float64, copy=False)
    return [product[:, row * width:(row + 1) * width] for row in range(slopes.shape[0])]


def _narrow_block(order: list[str], incoming: dict, width: int) -> tuple | None:
    """A cycle block whose declared low rank is below ``width`` and still holds (left @ right equals the
    block's matrix to 1e-12 of its largest entry): (its position in ``order``, (left, right), its factor)."""
    for index, row in enumerate(order):
        _, matrix, factor, low_rank = incoming[row]
        if low_rank is None or low_rank[0].shape[1] >= width:
            continue
        left, right = low_rank
        if left.shape[0] != matrix.shape[0] or right.shape[1] != matrix.shape[1]:
            continue
        scale = float(np.max(np.abs(matrix), initial=0.0))
        if scale > 0.0 and np.max(np.abs(factor * (left @ right) - matrix)) <= 1e-12 * scale:
            return index, (left, right), factor
    return None


def tail_radius(cycle: BlockCycle, u: np.ndarray) -> float:
    """The largest |1 − u_i| over the tail channels (0 without tails): a floor of the spectral radius."""
    return max((float(np.max(np.abs(1.0 - u[part]), initial=0.0)) for part in cycle.tails), default=0.0)


def blockwise_radius(cycle: BlockCycle, u: np.ndarray) -> np.ndarray:
    """Spectral radius of M for block-wise u [..., K] (any leading batch shape).

    Exact, and cheaper than one companion eigenproblem per cycle eigenvalue: the radius is first taken over
    the ``LEADING`` cycle eigenvalues of largest modulus (r₀), then only the eigenvalues c that could exceed
    it are solved. By Rouché's theorem, if |c|·Π u_b < min over |μ| = r₀ of |Π (μ − a_b)|, a bound of which is
    Π (r₀ − |a_b|) when r₀ > max |a_b|, then Π (μ − a_b) − c Π u_b has all its roots inside |μ| < r₀, as
    Π (μ − a_b) has: such a c cannot raise the radius, and skipping it changes no result.
    """
    u = np.asarray(u, dtype=float)
    batch = u.shape[:-1]
    flat = u.reshape(-1, u.shape[-1])
    values = cycle.eigenvalues.reshape(-1)
    values = values[np.argsort(-np.abs(values), kind="stable")]
    leading = min(LEADING, values.size)
    radius = _companion_radius(flat, np.broadcast_to(values[:leading], (flat.shape[0], leading)))
    rest = values[leading:]
    if rest.size:
        a = np.abs(1.0 - flat)
        gaps = radius[:, None] - a
        bound = np.where(np.all(gaps > 0, axis=1), np.prod(np.clip(gaps, 0, None), axis=1), 0.0)
        threshold = bound / np.prod(flat, axis=1)
        rows, columns = np.nonzero(np.abs(rest)[None, :] >= threshold[:, None])
        if rows.size:
            radii = _companion_radius(flat[rows], rest[columns][:, None])
            np.maximum.at(radius, rows, radii)
    return radius.reshape(batch)


def _companion_radius(u: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Largest root modulus of Π_b (μ − a_b) − c Π_b u_b over the cycle eigenvalues c in ``values`` [N, E] per
    row of u [N, K], and at least max |a_b| (the a_b are eigenvalues of M too)."""
    groups = u.shape[-1]
    a = 1.0 - u
    # Π_b (μ − a_b) − c Π_b u_b: monic polynomial coefficients from the a_b, then subtract c Π u from the constant.
    coefficients = np.ones(u.shape[:-1] + (1,))
    for index in range(groups):
        shifted = np.concatenate([coefficients, np.zeros(coefficients.shape[:-1] + (1,))], axis=-1)
        shifted[..., 1:] -= a[..., index:index + 1] * coefficients
        coefficients = shifted
    polynomial = np.broadcast_to(coefficients[:, None, :], values.shape + (groups + 1,)).astype(complex)
    polynomial[..., -1] -= values * np.prod(u, axis=-1)[:, None]
    companion = np.zeros(polynomial.shape[:-1] + (groups, groups), dtype=complex)
    companion[..., 0, :] = -polynomial[..., 1:]
    if groups > 1:
        companion[..., np.arange(1, groups), np.arange(groups - 1)] = 1.0
    roots = np.abs(np.linalg.eigvals(companion)).max(axis=(-1, -2))
    return np.maximum(roots, np.abs(a).max(axis=-1))


def search_blockwise(cycle: BlockCycle, lower: np.ndarray, upper: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Block-wise u within [lower, upper] per group minimising ``blockwise_radius`` (coordinate descent)."""
    u = np.clip(np.asarray(start, dtype=float), lower, upper)
    best = float(blockwise_radius(cycle, u))
    working = _leading(cycle.eigenvalues.reshape(-1))
    for _ in range(SWEEPS):
        improved = False
        for group in range(u.size):
            if upper[group] <= lower[group]:
                continue
            grid = np.unique(np.concatenate([np.geomspace(max(lower[group], 1e-6), upper[group], GRID_POINTS),
                                             [lower[group], upper[group]]]))
            candidates = np.repeat(u[None, :], grid.size, axis=0)
            candidates[:, group] = grid
            choice, radius, working = _smallest_radius(cycle, candidates, working)
            if radius < best - 1e-12:
                best, u = radius, candidates[choice]
                improved = True
        if not improved:
            break
    return u


def _leading(values: np.ndarray) -> np.ndarray:
    return values[np.argsort(-np.abs(values), kind="stable")[:LEADING]]


def _smallest_radius(cycle: BlockCycle, candidates: np.ndarray,
                     working: np.ndarray) -> tuple[int, float, np.ndarray]:
    """``argmin`` of ``blockwise_radius`` over the rows of ``candidates``, its radius, and the working set of
    cycle eigenvalues it needed.

    The radius over a subset of cycle eigenvalues is a lower bound of the radius over all of them. So if the
    row minimising the subset's radius has the same radius over all of them, no other row can be below it, and
    it is the first such row, as ``np.argmin`` over every eigenvalue would choose. Otherwise the eigenvalues
    that raised that row's radius join the working set and the search repeats: the same answer as the full
    grid, at the cost of a few eigenvalues per row instead of all of them.
    """
    values = cycle.eigenvalues.reshape(-1)
    while True:
        radii = _companion_radius(candidates, np.broadcast_to(working, (candidates.shape[0], working.size)))
        choice = int(np.argmin(radii))
        row = candidates[choice]
        exact = float(blockwise_radius(cycle, row))
        if exact == radii[choice]:
            return choice, exact, working
        each = _companion_radius(np.repeat(row[None, :], values.size, axis=0), values[:, None])
        working = np.concatenate([working, values[each > radii[choice]]])
