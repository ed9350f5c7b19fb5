"""The α candidates of one group of closed phases, their spectral radii and the measured judge between them.

Requires: the linearisations of every phase in the group (σ' at the fixed points seeded samples reach, or
at the zero state when none settled), per-channel bounds on u = 1 − α (the target's α range and gain range),
and optionally the probes of a recorded run (``alpha_probe``). Guarantees: every candidate lies within the
bounds, so every hardware limit holds and the fixed points are unchanged (0 ≤ α < 1, Eq. 10):

- ``min``: the smallest α the bounds allow (u = upper);
- ``global``: one u for every channel, the exact minimax of |1 − u(1 − λ)| over the eigenvalues λ;
- ``blockwise``: one u per state group, from the exact cycle spectrum (``alpha_cycle``), when the blocks form
  one simple cycle (groups written but never read, such as a fold-input MLP's state, may hang off it);
- ``channelwise``: a u per channel, by the cone programs of ``alpha_channelwise`` from the best of the above
  (up to ``DENSE_LIMIT`` channels; above it the report says it was skipped).

``radii`` is each candidate's worst spectral radius over every linearisation of the group. ``judge`` runs the
candidates' loops on the recorded probes (the executor's own arithmetic, all candidates in one batch) and
returns the fewest iterations, ``min`` kept unless another saves at least one iteration per phase: the judge of
last resort, between a handful of candidates the convex programs produced, never a search.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sparse

from admc.passes.alpha_acceptance import ACCEPTANCE_LIMIT, SETTLE_MARGIN
from admc.passes.alpha_channelwise import DENSE_LIMIT, RadiusMemo, descend, worst_radius
from admc.passes.alpha_cycle import BlockCycle, blockwise_radius, search_blockwise, tail_radius
from admc.passes.alpha_probe import PhaseProbe, probe_iterations
from admc.passes.alpha_problem import Linearisation, noise_gain, solve_global, spectral_radius

# The linearisations that enter the cone programs: the slowest at the start (the others contract faster).
WORST_LINEARISATIONS = 4
# Probe loops: iterations × samples × channels × candidates at most (about a second of numpy), and a candidate
# this much slower than the fastest stops being counted (it cannot be chosen); no count goes past what the
# acceptance allows.
PROBE_LIMIT = ACCEPTANCE_LIMIT // SETTLE_MARGIN
PROBE_WORK = 400_000_000
PATIENCE = 1.5
JUDGE_SAMPLES = 32
# Ties go to the earlier (min: least α, least noise).
ORDER = ("min", "global", "blockwise", "channelwise", "channelwise from previous phase", "channelwise from min")


@dataclass
class GroupChoice:
    """The candidates of one group of phases and what they measured."""

    options: dict[str, np.ndarray]
    radii: dict[str, float]
    chosen: str
    measured: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def dense_jacobians(parts: list[Linearisation]) -> list[np.ndarray]:
    return [jacobian.toarray() for part in parts for jacobian in part.jacobians()]


def cycle_eigenvalues(cycle: BlockCycle) -> np.ndarray:
    """Every non-zero eigenvalue of J on a K-block cycle: the K-th roots of each cycle-product eigenvalue c
    (λ^K = c), plus 0 — exact, with no n × n eigenproblem."""
    groups = len(cycle.groups)
    values = cycle.eigenvalues.reshape(-1).astype(complex)
    roots = np.exp(2j * np.pi * np.arange(groups) / groups)
    return np.concatenate([(values[:, None] ** (1.0 / groups) * roots[None, :]).reshape(-1), [0.0]])


def block_values(cycle: BlockCycle, u: np.ndarray) -> np.ndarray | None:
    """u per cycle group when u is constant on every group, else None."""
    values = np.array([u[part][0] if u[part].size else 1.0 for part in cycle.slices])
    constant = all(np.all(u[part] == value) for part, value in zip(cycle.slices, values, strict=True))
    return values if constant else None


def group_radius(parts: list[Linearisation], dense: list[np.ndarray] | None, cycle: BlockCycle | None,
                 u: np.ndarray, memo: RadiusMemo | None = None) -> float:
    """Worst spectral radius of M(u) over the group's linearisations: dense eigenvalues, else the exact cycle
    formula when u is block-constant on the cycle's groups (any u on its tails), else ARPACK."""
    if dense is not None:
        return worst_radius(dense, u, memo)
    values = None if cycle is None else block_values(cycle, u)
    if values is not None:
        return max(float(blockwise_radius(cycle, values)), tail_radius(cycle, u))
    return max(spectral_radius(jacobian, u) for part in parts for jacobian in part.jacobians())


def candidates(parts: list[Linearisation], cycle: BlockCycle | None, lower: np.ndarray, upper: np.ndarray,
               mode: str, noise_weight: float, noise_model: str, cone_programs: int = 8,
               previous: np.ndarray | None = None) -> GroupChoice:
    """The spectral candidates and their radii (``auto``: all four; ``global``: min and global)."""
    size, memo = lower.size, RadiusMemo()
    dense = dense_jacobians(parts) if size <= DENSE_LIMIT else None
    if dense is not None:
        eigenvalues = np.concatenate([np.linalg.eigvals(jacobian) for jacobian in dense])
    else:
        eigenvalues = None if cycle is None else cycle_eigenvalues(cycle)
    single = solve_global(parts, float(np.max(lower)), float(np.min(upper)), noise_weight, noise_model,
                          eigenvalues)
    options = {"min": upper.copy(), "global": np.clip(np.full(size, single), lower, upper)}
    radii = {name: group_radius(parts, dense, cycle, u, memo) for name, u in options.items()}
    notes: list[str] = []
    if mode == "auto" and cycle is not None:
        low = np.array([np.max(lower[part]) for part in cycle.slices])
        high = np.array([max(np.min(upper[part]), np.max(lower[part])) for part in cycle.slices])
        values = search_blockwise(cycle, low, high, np.clip(np.full(len(cycle.slices), single), low, high))
        blockwise = options["global"].copy()
        for part, value in zip(cycle.slices, values, strict=True):
            blockwise[part] = value
        options["blockwise"] = np.clip(blockwise, lower, upper)
        radii["blockwise"] = group_radius(parts, dense, cycle, options["blockwise"], memo)
    if mode == "auto" and dense is not None:
        # Descents from the best spectral candidate and from the previous phase's choice (neighbouring
        # phases' loops are alike, so it starts near a good optimum): ρ is not convex, so each start can end in
        # its own local optimum, and the smallest ρ is not always the fewest iterations.
        solved = 0
        starts = {"best": options[min(radii, key=lambda name: (radii[name], ORDER.index(name)))]}
        if previous is not None:
            starts["previous phase"] = np.clip(previous, lower, upper)
        starts["min"] = options["min"]
        descents: dict[bytes, tuple[np.ndarray, float]] = {}
        for name, start in starts.items():
            if start.tobytes() not in descents:  # the descent is deterministic: an equal start, an equal end
                worst = sorted(dense, key=lambda jacobian: -memo.radius(jacobian, start))[:WORST_LINEARISATIONS]
                found, count = descend(worst, lower, upper, start, noise_weight, noise_model,
                                       max(3, cone_programs // len(starts)), memo)
                descents[start.tobytes()], solved = (found, worst_radius(dense, found, memo)), solved + count
            label = "channelwise" if "channelwise" not in options else f"channelwise from {name}"
            options[label], radii[label] = descents[start.tobytes()]
        notes.append(f"channel-wise: {solved} cone programs")
    elif mode == "auto":
        notes.append(f"channel-wise search skipped: {size} channels > {DENSE_LIMIT} (dense eigenproblems)")
    spectral = min(radii, key=lambda name: (radii[name], ORDER.index(name)))
    return GroupChoice(options, radii, spectral, notes=notes)


def _work(probe: PhaseProbe) -> int:
    return max(sum(matrix.size for _, _, matrix in probe.compiled.blocks) + probe.start.shape[1], 1)


def judge(executor, probes: list[PhaseProbe], choice: GroupChoice, tolerance: float, noise_model: str,
          noisy: bool) -> GroupChoice:
    """The candidate with the fewest iterations on the probes (× noise gain on a target with read noise).

    Equal candidates run once (above the dense limit `min`, `global` and `blockwise` are often one table), and
    with a single distinct candidate there is nothing to judge: it is chosen and nothing is measured."""
    names = [name for name in ORDER if name in choice.options]
    table = np.stack([choice.options[name] for name in names])
    distinct, position = np.unique(table, axis=0, return_inverse=True)
    if distinct.shape[0] == 1:
        return GroupChoice(choice.options, choice.radii, names[0], {}, choice.notes)
    totals = np.zeros(distinct.shape[0])
    for probe in probes:
        samples = int(min(JUDGE_SAMPLES, probe.start.shape[0]))
        limit = int(np.clip(PROBE_WORK // (_work(probe) * samples * distinct.shape[0]), 50, PROBE_LIMIT))
        trimmed = PhaseProbe(probe.compiled, probe.start[:samples], probe.drive[:samples], probe.fixed_point)
        totals += probe_iterations(executor, trimmed, 1.0 - distinct, tolerance, limit, PATIENCE)
    totals = totals[position.reshape(-1)]
    noise = np.array([float(np.mean(noise_gain(np.clip(u, 1e-12, 1.0), noise_model))) for u in table])
    score = totals * noise if noisy else totals
    measured = {name: float(total) for name, total in zip(names, totals, strict=True)}
    if not np.any(np.isfinite(score)):
        return GroupChoice(choice.options, choice.radii, choice.chosen, measured, choice.notes)
    best = int(np.argmin(score))  # argmin keeps the first of equals: ORDER's preference
    if "min" in names and np.isfinite(score[0]) and score[0] <= score[best] + len(probes):
        best = 0  # a saving within the probes' resolution (one iteration per phase) does not leave min
    return GroupChoice(choice.options, choice.radii, names[best], measured, choice.notes)


def loop_matrices(program, flat_phases, rows: list[int], builder) -> dict[int, Callable[[], sparse.csr_matrix]]:
    """The loop matrix of each row, as a function building it at most once per distinct step scale: on a block
    cycle above the dense limit nothing asks for it (a sparse matrix of every weight: seconds at 17M weights)."""
    by_scale: dict[float, Callable[[], sparse.csr_matrix]] = {}
    result = {}
    for row in rows:
        scale = flat_phases[row].step_scale
        if scale not in by_scale:
            by_scale[scale] = functools.cache(functools.partial(builder, program, flat_phases[row]))
        result[row] = by_scale[scale]
    return result
