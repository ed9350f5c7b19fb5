"""The channel-wise α search's step program, in Clarabel's conic standard form.

One trust-region step of ``alpha_channelwise.descend`` solves, over the step d and a bound s,

    minimise    s + w · mean_i g(u_i + d_i)
    subject to  |μ_j + g_jᵀ d| ≤ s                   (one second-order cone per eigenvalue j)
                lowest ≤ d ≤ highest

with g the read-noise gain (``alpha_problem.noise_gain``, convex in u). The problem is stated here directly as
Clarabel's ``A x + s = b, s ∈ K`` rather than through cvxpy: Clarabel is the solver cvxpy would call, and
cvxpy's import (1.5-2.7 s) and per-solve canonicalisation (3 ms) cost more than the whole search on a small
network. ``tests/test_alpha_step_program.py`` checks the optimum against the same problem written in cvxpy.

The noise gain as cones, with u = current + d:
- ``after_skip``, g ≥ 1/(u(2 − u)): z ≤ 2u − u² (u² ≤ (2u − z)·1, a rotated cone) and g·z ≥ 1 (another);
- ``optical``, g ≥ 2/(2 − u) − 1: (g + 1)(2 − u) ≥ 2 (a rotated cone).
A rotated cone a² ≤ b·c (b, c ≥ 0) is the second-order cone ‖(2a, b − c)‖ ≤ b + c.

Requires: finite eigenvalues and gradients, lowest ≤ highest. Guarantees: the step d, or None when Clarabel
reports anything but an (almost) solved problem.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

SOLVED = ("Solved", "AlmostSolved")


class _Rows:
    """Rows of A and b, gathered cone by cone (Clarabel takes the cones in the order their rows appear); the
    entries are index arrays, not sparse matrices: assembling with scipy's stacking cost more than the solve."""

    def __init__(self, variables: int) -> None:
        self.variables = variables
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.constants: list[np.ndarray] = []
        self.count = 0

    def add_cones(self, constants: np.ndarray, terms: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Cones of ``constants.shape[1]`` rows each (one per row of ``constants``); a cone's row r has slack
        ``constants[c, r] + Σ coefficient · x[column]`` over the ``terms`` (r, columns [c, k], coefficients
        [c, k]) naming that row. (Slack = b − A x, so A holds the negated coefficients.)"""
        cones, width = constants.shape
        for row, columns, coefficients in terms:
            rows = np.broadcast_to((self.count + row + width * np.arange(cones))[:, None], columns.shape)
            self.parts.append((rows.ravel(), columns.ravel(), -coefficients.ravel()))
        self.constants.append(constants.ravel())
        self.count += cones * width

    def matrix(self) -> tuple[sparse.csc_matrix, np.ndarray]:
        rows, columns, data = (np.concatenate(part) for part in zip(*self.parts, strict=True))
        return (sparse.csc_matrix((data, (rows, columns)), shape=(self.count, self.variables)),
                np.concatenate(self.constants))


def _each(columns: np.ndarray, coefficient: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One variable per cone: columns [c, 1] and their coefficients."""
    column = np.asarray(columns)[:, None]
    return column, np.broadcast_to(np.asarray(coefficient, dtype=float), column.shape).reshape(column.shape)


def solve_step(values: np.ndarray, gradients: np.ndarray, lowest: np.ndarray, highest: np.ndarray,
               current: np.ndarray, noise_weight: float, noise_model: str) -> np.ndarray | None:
    """The step d of the program above: ``values`` [m] complex, ``gradients`` [m, n] complex."""
    import clarabel

    size, count = current.size, values.size
    noisy = noise_weight > 0
    extra = (2 if noise_model == "after_skip" else 1) * size if noisy else 0
    variables = size + 1 + extra  # d, s, then g (and z for after_skip)
    channels = np.arange(size)
    rows = _Rows(variables)
    rows.add_cones(np.stack([-lowest, highest], 1), [(0, *_each(channels)), (1, *_each(channels, -1.0))])
    cones = [clarabel.NonnegativeConeT(2 * size)]
    if noisy:
        cones += _noise_cones(rows, size, current, noise_model)
    every = np.broadcast_to(channels, (count, size))
    rows.add_cones(np.stack([np.zeros(count), values.real, values.imag], 1),
                   [(0, *_each(np.full(count, size))), (1, every, gradients.real), (2, every, gradients.imag)])
    cones += [clarabel.SecondOrderConeT(3)] * count
    matrix, constants = rows.matrix()
    linear = np.zeros(variables)
    linear[size] = 1.0
    if noisy:
        linear[size + 1:2 * size + 1] = noise_weight / size
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(sparse.csc_matrix((variables, variables)), linear, matrix, constants, cones,
                                      settings).solve()
    if str(solution.status) not in SOLVED:
        return None
    result = np.asarray(solution.x[:size], dtype=float)
    return result if np.all(np.isfinite(result)) else None


def _noise_cones(rows: _Rows, size: int, current: np.ndarray, noise_model: str) -> list:
    """The cones bounding g_i (variables size + 1 …) by the noise gain of u_i = current_i + d_i."""
    import clarabel

    step, gain = np.arange(size), size + 1 + np.arange(size)
    both = np.stack([step, gain], 1)
    if noise_model == "after_skip":
        floor = 2 * size + 1 + np.arange(size)
        with_floor = np.stack([step, floor], 1)
        twos = np.tile([2.0, -1.0], (size, 1))
        # u² ≤ (2u − z)·1:  ‖(2u, 2u − z − 1)‖ ≤ 2u − z + 1
        rows.add_cones(np.stack([2 * current + 1, 2 * current, 2 * current - 1], 1),
                       [(0, with_floor, twos), (1, *_each(step, 2.0)), (2, with_floor, twos)])
        # 1 ≤ g·z:  ‖(2, g − z)‖ ≤ g + z
        pair = np.stack([gain, floor], 1)
        rows.add_cones(np.stack([np.zeros(size), np.full(size, 2.0), np.zeros(size)], 1),
                       [(0, pair, np.ones((size, 2))), (2, pair, np.tile([1.0, -1.0], (size, 1)))])
        return [clarabel.SecondOrderConeT(3)] * (2 * size)
    # 2 ≤ (g + 1)(2 − u):  ‖(2√2, g + 1 − (2 − u))‖ ≤ g + 1 + 2 − u
    rows.add_cones(np.stack([3 - current, np.full(size, 2 * np.sqrt(2.0)), current - 1], 1),
                   [(0, both, np.tile([-1.0, 1.0], (size, 1))), (2, both, np.ones((size, 2)))])
    return [clarabel.SecondOrderConeT(3)] * size
