"""Convergence certificates of a closed phase for the α chosen: Theorem 1, block bound, SDP; iterations, T_min.

Requires: a ``BlockProgram`` (blocks, groups, σ gains), a closed ``Phase`` and the phase's α [n]. σ is
slope-restricted: σ' ∈ [0, s_j] per channel (``loop_jacobian.slope_bounds``). Guarantees: every factor is a
valid bound on the contraction of the relaxed loop z ← α⊙z + (1−α)⊙(A σ(z) + v) for every x and t (they
enter additively), each in its own norm; the hierarchy SDP ≤ block ≤ Theorem 1 holds by construction
(each reports the best of itself and the bounds below it, the raw value is kept alongside):

- Theorem 1 (∞-norm comparison): with e_b = max_{i∈b} |δz_i| per state group,
  e_b' ≤ ᾱ_b e_b + (1 − α̲_b) Σ_c ‖A_bc diag(s_c)‖_∞ e_c, so the rate is the Perron root of that K × K
  matrix; at α = 0 on a pure K-cycle it is (Δt s^K Π ‖W_i‖_∞)^{1/K}, the paper's Theorem 1 per iteration.
- block bound: the same comparison with spectral norms ‖A_bc diag(s_c)‖₂ (every cycle of the block graph,
  skip edges included, is in the Perron root);
- SDP: the smallest ρ for which diagonal P ≻ 0 and Λ ⪰ 0 satisfy
  Eᵀ P E − diag(ρ² P, 0) + [[0, Λ S / 2], [Λ S / 2, −Λ]] ⪯ 0 with E = [diag(α), diag(1 − α) A]
  (S-procedure on δw_j (s_j δz_j − δw_j) ≥ 0), searched by ``sdp_certificate`` (every ρ it reports is
  checked densely); it sees damping the norms cannot.
From ρ < 1: iterations ⌈log(tol) / log ρ⌉ to shrink the error by the settle tolerance (in the certificate's
norm), and T_min for implicit Euler (step scale 1/T) and Crank-Nicolson (1/(2T)) on a uniform grid.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse.linalg as sparse_linalg

from admc.ir.program import CLOSED, SCALE_CLASSES, BlockProgram, Phase, block_scale
from admc.passes.loop_jacobian import loop_matrix, slope_bounds
from admc.passes.sdp_certificate import sdp_certificate

# Channels: above this the SDP is skipped (LMI 2n × 2n; ``sdp_certificate``: each Newton step of its barrier solver
# factorises a 2n × 2n matrix). Measured (benchmarks/certificate_timing.py, CPU s, load ~7 on 2 shared cores): a
# full search that certifies takes 0.28 s at 65 channels, 0.74 s at 98, 3.4 s at 200, 7.6 s at 299; on the
# two-moons example (66) ≤ 0.17 s per phase (it was 11 s with the SCS bisection). The search stops at once
# when its spectral lower end is ≥ the upper end.
SDP_LIMIT = 300
LARGEST_STEPS = 1 << 16
# Above this many rows or columns a block's spectral norm comes from Lanczos (svds, a few products with the block)
# instead of a full SVD (cubic: 0.1-0.3 s per 1024 × 1024 block, seconds per build at 3M weights). Lanczos runs on
# a float32 copy: its ~130 products are bound by reading the block, and half the bytes made it 3.5× faster on a
# 4096 × 4096 block (2.57 → 0.74 s, one thread). The bound stays an upper bound: Lanczos converges from below, so
# its value is raised by LANCZOS_MARGIN (relative; float32 Lanczos agrees with the SVD of the copy to ~1e-7), and
# the copy's rounding is added back as ‖A − A₃₂‖_F ≥ ‖A − A₃₂‖₂ (triangle inequality: ‖A‖ ≤ ‖A₃₂‖ + ‖A − A₃₂‖).
DENSE_NORM_LIMIT = 512
LANCZOS_MARGIN = 1e-5
ROUNDING_ROWS = 1024  # rows per chunk of the rounding's Frobenius norm (no block-sized float64 temporary)


def _spectral_norm(matrix: np.ndarray) -> float:
    if matrix.size == 0:
        return 0.0
    if max(matrix.shape) <= DENSE_NORM_LIMIT or min(matrix.shape) < 3:
        return float(np.linalg.norm(matrix, 2))
    single = matrix.astype(np.float32)
    value = sparse_linalg.svds(single, k=1, return_singular_vectors=False, random_state=0)[0]
    rounding = math.sqrt(sum(float(np.sum(np.square(matrix[start:start + ROUNDING_ROWS]
                                                    - single[start:start + ROUNDING_ROWS])))
                             for start in range(0, matrix.shape[0], ROUNDING_ROWS)))
    return float(value) * (1.0 + LANCZOS_MARGIN) + rounding


def group_norms(program: BlockProgram, phase: Phase, memo: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """‖A_bc diag(s_c)‖_∞ and ‖A_bc diag(s_c)‖₂ per (row group, column group), [G, G] each.

    ``memo`` (a dict the caller keeps for one program's certificates): a pair made of the same block matrices
    with the same factors and slope bounds is the same matrix, so its norms are taken from there, bit for bit
    (a Lanczos norm of a 4096 × 4096 block costs ~150 products with it; the T_min bounds and each phase's
    certificate ask for the same blocks)."""
    names = [group.name for group in program.groups]
    index = {name: position for position, name in enumerate(names)}
    bound = slope_bounds(program)
    parts: dict[tuple[int, int], list] = {}
    for block in program.blocks:
        factor = block_scale(block.scale_class, phase.step_scale, phase.loop)
        if factor != 0.0:
            parts.setdefault((index[block.row_group], index[block.column_group]), []).append((block, factor))
    infinity = np.zeros((len(names), len(names)))
    spectral = np.zeros_like(infinity)
    for (row, column), blocks in parts.items():
        group = program.group(names[column])
        slopes = bound[group.offset:group.stop]
        key = (tuple((id(block.matrix), factor) for block, factor in blocks), slopes.tobytes())
        if memo is None or key not in memo:
            matrix = None
            for block, factor in blocks:
                scaled = factor * block.matrix * slopes[None, :]
                matrix = scaled if matrix is None else matrix + scaled
            norms = (float(np.max(np.sum(np.abs(matrix), axis=1), initial=0.0)), _spectral_norm(matrix))
            if memo is None:
                infinity[row, column], spectral[row, column] = norms
                continue
            memo[key] = (norms, [block.matrix for block, _ in blocks])  # the matrices: their ids stay theirs
        infinity[row, column], spectral[row, column] = memo[key][0]
    return infinity, spectral


def _perron_root(norms: np.ndarray, program: BlockProgram, alpha: np.ndarray) -> float:
    high = np.array([np.max(alpha[group.offset:group.stop], initial=0.0) for group in program.groups])
    low = np.array([np.min(alpha[group.offset:group.stop], initial=0.0) for group in program.groups])
    comparison = np.diag(high) + (1.0 - low)[:, None] * norms
    return float(np.max(np.abs(np.linalg.eigvals(comparison)), initial=0.0))


def theorem1_and_block(program: BlockProgram, phase: Phase, alpha: np.ndarray, memo: dict | None = None
                       ) -> tuple[float, float, float]:
    """(Theorem 1 factor, block bound = min(raw, Theorem 1), raw spectral-norm block factor); ``memo`` as
    ``group_norms``'s."""
    infinity, spectral = group_norms(program, phase, memo)
    theorem1 = _perron_root(infinity, program, alpha)
    raw = _perron_root(spectral, program, alpha)
    return theorem1, min(raw, theorem1), raw


def sdp_factor(program: BlockProgram, phase: Phase, alpha: np.ndarray, upper: float = 1.0) -> float | None:
    """Smallest ρ ≤ ``upper`` the semidefinite search certifies (checked densely), or None (``sdp_certificate``)."""
    certificate = sdp_certificate(loop_matrix(program, phase), alpha, slope_bounds(program), upper)
    return None if certificate is None else certificate.rho


def iterations(factor: float | None, tolerance: float) -> int | None:
    if factor is None or not factor < 1.0:
        return None
    if factor <= 0.0:
        return 1
    return max(1, math.ceil(math.log(tolerance) / math.log(factor)))


def smallest_steps(program: BlockProgram, alpha: np.ndarray, scale_per_step: float, bound) -> int | None:
    """Fewest uniform steps T whose closed phase (step scale ``scale_per_step``/T) ``bound`` certifies."""

    def certified(steps: int) -> bool:
        factor = bound(program, Phase(CLOSED, scale_per_step / steps, 1.0, ()), alpha)
        return factor is not None and factor < 1.0

    high = 1
    while not certified(high):
        high *= 2
        if high > LARGEST_STEPS:
            return None
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if certified(middle) else (middle, high)
    return high


def certify_phase(program: BlockProgram, phase: Phase, alpha: np.ndarray, tolerance: float,
                  sdp: bool = True, memo: dict | None = None) -> dict:
    theorem1, block, block_raw = theorem1_and_block(program, phase, alpha, memo)
    result = {"theorem1": theorem1, "block": block, "block_raw": block_raw, "sdp": None, "sdp_raw": None}
    if sdp and program.size <= SDP_LIMIT:
        raw = sdp_factor(program, phase, alpha, upper=min(1.0, block) if block < 1.0 else 1.0)
        result["sdp_raw"] = raw
        result["sdp"] = block if raw is None else min(raw, block)
    best = min(value for value in (theorem1, block, result["sdp"]) if value is not None)
    result["best"] = best
    result["certified_iterations"] = iterations(best, tolerance)
    return result


def steps_needed(program: BlockProgram, alpha: np.ndarray, memo: dict | None = None) -> dict:
    """T_min of the Theorem 1 and block bounds for implicit Euler and Crank-Nicolson (same α).

    Block norms are computed once per scale class; at another step scale a (row, column) pair's norm is
    Σ_class factor × norm (exact when the pair has one class, the triangle inequality otherwise). ``memo``
    as ``group_norms``'s.
    """
    by_class = {}
    for scale_class in SCALE_CLASSES:
        only = BlockProgram(program.state_dimension, program.groups,
                            [block for block in program.blocks if block.scale_class == scale_class], [], [],
                            program.readout_group, program.open_iterations, program.layout)
        by_class[scale_class] = group_norms(only, Phase(CLOSED, 1.0, 1.0, ()), memo)

    def bound(kind: int):
        def factor(_program, phase, alpha_values):
            norms = sum(block_scale(name, phase.step_scale, phase.loop) * by_class[name][kind]
                        for name in SCALE_CLASSES)
            return _perron_root(norms, program, alpha_values)
        return factor

    return {solver: {"theorem1": smallest_steps(program, alpha, scale, bound(0)),
                     "block": smallest_steps(program, alpha, scale, lambda *a: min(bound(0)(*a), bound(1)(*a)))}
            for solver, scale in (("implicit-euler", 1.0), ("crank-nicolson", 0.5))}
