"""α selection pass: the analog skip fraction per channel (and per phase where the target can), before any run.

Requires: a ``BlockProgram`` with its static table, a ``Schedule``, the target's α capabilities
(``AlphaCapabilities.of``) and a mode: ``auto`` (channel-wise convex program, the default), ``global`` (one α
per phase, or per program), ``min`` (the smallest α the range allows, the old choice) or the path of a
``.npy`` α table. Optionally ``row_peaks`` m_i (max |weight| feeding channel i in the target's units) and
``beta_max``, for the range constraint (1 − α_i) m_i ≤ β_max.
Guarantees: α ∈ [α_min, α_max] and within the range constraint; the fixed points are unchanged (Eq. 10);
``alpha`` is [n] or, when the target sets α per phase, [phases, n] (open phases get α = 0: they run their
exact feed-forward count). ``auto`` is judged against ``global`` and ``min`` by the spectral radius of the
relaxed Jacobian at the linearisations and never returned worse than either. A phase that no α in range
makes contract is refused naming the step, the phase, the best factor reached and the fewest steps that
would work (``force`` builds anyway). The linearisations are σ' at the zero state, then at the fixed points
of seeded calibration samples run with that first α (see docs/alpha-selection.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from admc.core.errors import AdmcError, ConvergenceError
from admc.ir.program import CLOSED, BlockProgram, Schedule
from admc.passes.alpha_cycle import BlockCycle, block_cycle, blockwise_radius, search_blockwise
from admc.passes.alpha_judge import Judge
from admc.passes.alpha_probe import ProbeRecorder
from admc.passes.alpha_problem import (
    Linearisation,
    noise_gain,
    solve_channelwise,
    solve_global,
    spectral_radius,
)
from admc.passes.loop_jacobian import loop_matrix, slope_bounds, slopes

MODES = ("auto", "global", "min")
LINEARISATION_SAMPLES = 16  # fewer on large programs: LINEARISATION_WORK channel-samples at most
LINEARISATION_WORK = 40_000
# Distinct from the loop budget's seed (1) and the benchmark's (0): the judge's probes are not the samples
# its choice is measured on.
LINEARISATION_SEED = 7
PROBE_SAMPLES = 256
# Linearisation points need σ' to a few digits, not the executor's 1e-13.
LINEARISATION_TOLERANCE = 1e-6
LINEARISATION_MAX_ITERATIONS = 5_000
LARGEST_STEPS = 4096
GLOBAL_GRID_POINTS = 61
# The pass runs many small dense eigenproblems and probe loops (matrices of a few hundred channels): BLAS
# threads only add synchronisation there, and on an oversubscribed machine a 130 × 130 eig took 0.48 s with
# OpenBLAS's 2 threads (a 454 s α pass). One thread inside the pass; the caller's setting is restored after.
BLAS_THREADS = 1


@dataclass(frozen=True)
class AlphaCapabilities:
    """What the α pass reads from a target description."""

    alpha_min: float
    alpha_max: float
    per_phase: bool
    noise_weight: float  # read-noise variance relative to the state's full scale (0: no noise term)
    noise_model: str = "after_skip"
    settle_tolerance: float = 1e-10  # the probe loops' stopping rule (the target's loop.settle_tolerance)

    @staticmethod
    def of(target) -> AlphaCapabilities:
        alpha = target.alpha
        weight = 0.0
        nonidealities = getattr(target, "nonidealities", None)
        state = getattr(target, "state", None)
        if nonidealities is not None and nonidealities.read_noise.enabled and state is not None:
            full_scale = min(abs(state.voltage_min), abs(state.voltage_max))
            weight = (nonidealities.read_noise.std / full_scale) ** 2
        loop = getattr(target, "loop", None)
        tolerance = loop.settle_tolerance if loop is not None else AlphaCapabilities.settle_tolerance
        return AlphaCapabilities(alpha.min, alpha.max, bool(alpha.per_phase), weight, settle_tolerance=tolerance)


@dataclass
class PhaseChoice:
    step: int
    phase: int
    row: int  # the phase's row in a per-phase α table
    contraction: float  # spectral radius of the relaxed Jacobian at the linearisations (max over them)


@dataclass
class AlphaSelection:
    alpha: np.ndarray
    mode: str
    phases: list[PhaseChoice] = field(default_factory=list)
    candidates: dict[str, float] = field(default_factory=dict)  # worst contraction per candidate

    def report(self) -> dict:
        return {"mode": self.mode, "per_phase": bool(self.alpha.ndim == 2),
                "alpha_min": float(np.min(self.alpha, initial=1.0)),
                "alpha_max": float(np.max(self.alpha, initial=0.0)),
                "candidates": self.candidates,
                "phases": [{"step": choice.step, "phase": choice.phase, "contraction_estimate": choice.contraction}
                           for choice in self.phases]}


def closed_phases(schedule: Schedule) -> list[tuple[int, int, int]]:
    """(step, phase index, flat row) of every closed phase."""
    result, row = [], 0
    for step, phases in enumerate(schedule.steps):
        for index, phase in enumerate(phases):
            if phase.loop == CLOSED:
                result.append((step, index, row))
            row += 1
    return result


def phase_count(schedule: Schedule) -> int:
    return sum(len(phases) for phases in schedule.steps)


def read_alpha_file(path: str | Path, size: int, rows: int, capabilities: AlphaCapabilities) -> np.ndarray:
    try:
        alpha = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise AdmcError(f"{path}: cannot read α table ({error})") from None
    shapes = [(size,)] + ([(rows, size)] if capabilities.per_phase else [])
    if alpha.shape not in shapes or not np.issubdtype(alpha.dtype, np.number):
        raise AdmcError(f"{path}: α table must be numeric with shape {' or '.join(map(str, shapes))}, "
                        f"got {alpha.dtype} {alpha.shape}")
    alpha = alpha.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(alpha.ravel()) | (alpha.ravel() < capabilities.alpha_min)
                         | (alpha.ravel() > capabilities.alpha_max))
    if bad.size:
        where = np.unravel_index(bad[0], alpha.shape)
        raise AdmcError(f"{path}: α at index {tuple(int(i) for i in where)} is {float(alpha[where]):g}, outside the "
                        f"target's range [{capabilities.alpha_min:g}, {capabilities.alpha_max:g}]")
    return alpha


def bounds(size: int, capabilities: AlphaCapabilities, row_peaks: np.ndarray | None,
           beta_max: float | None) -> tuple[np.ndarray, np.ndarray]:
    """u = 1 − α bounds per channel: [1 − α_max, min(1 − α_min, β_max / m_i)]."""
    lower = np.full(size, 1.0 - capabilities.alpha_max)
    upper = np.full(size, 1.0 - capabilities.alpha_min)
    if row_peaks is not None and beta_max is not None:
        upper = np.minimum(upper, beta_max / np.maximum(row_peaks, 1e-300))
    return lower, np.maximum(upper, lower)


def _alpha_table(schedule: Schedule, size: int, per_phase: bool, u_by_row: dict[int, np.ndarray]) -> np.ndarray:
    if per_phase:
        table = np.zeros((phase_count(schedule), size))
        for row, u in u_by_row.items():
            table[row] = 1.0 - u
        return table
    return 1.0 - next(iter(u_by_row.values())) if u_by_row else np.zeros(size)


def select_alpha(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str = "auto",
                 row_peaks: np.ndarray | None = None, beta_max: float | None = None,
                 force: bool = False) -> AlphaSelection:
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        return _select_alpha(program, schedule, capabilities, mode, row_peaks, beta_max, force)


def _select_alpha(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str,
                  row_peaks: np.ndarray | None, beta_max: float | None, force: bool) -> AlphaSelection:
    size = program.size
    lower, upper = bounds(size, capabilities, row_peaks, beta_max)
    if mode not in MODES:
        alpha = read_alpha_file(mode, size, phase_count(schedule), capabilities)
        if np.any(1.0 - alpha > upper + 1e-12):
            channel = int(np.flatnonzero(np.any(np.atleast_2d(1.0 - alpha) > upper + 1e-12, axis=0))[0])
            raise AdmcError(f"{mode}: α of channel {channel} is below {1 - upper[channel]:.4f}, the smallest that "
                            "keeps its weights within the gain range")
        return AlphaSelection(alpha, "file")
    closed = closed_phases(schedule)
    if mode == "min" or not closed:
        return AlphaSelection(_alpha_table(schedule, size, capabilities.per_phase,
                                           {row: upper for _, _, row in closed}), "min")
    flat_phases = [phase for phases in schedule.steps for phase in phases]
    cache: dict[int, object] = {}

    def matrix_of(row: int):
        def build():
            if row not in cache:
                cache[row] = loop_matrix(program, flat_phases[row])
            return cache[row]
        return build

    matrices = {row: matrix_of(row) for _, _, row in closed}
    zero_state = slope_bounds(program)[None, :]
    linearisations = {row: Linearisation(matrices[row], zero_state) for _, _, row in closed}
    # First round: the exact single-α optimum at the zero state, only to reach the fixed points.
    first = _choose(program, flat_phases, linearisations, closed, lower, upper, capabilities, "global")
    # Second round: linearise at the fixed points seeded samples reach with the first α.
    samples = int(np.clip(LINEARISATION_WORK // max(size, 1), 2, LINEARISATION_SAMPLES))
    # The same run records the probes of the measured judge: more samples than linearisations where cheap
    # (a loop's count is its slowest sample's, so a few probes miss the slow ones).
    recorded = int(np.clip(LINEARISATION_WORK // max(size, 1), samples, PROBE_SAMPLES))
    noise = np.random.default_rng(LINEARISATION_SEED).standard_normal((recorded, program.state_dimension))
    recorder = _record_probes(program, schedule, capabilities, closed, noise,
                              (first[0], {row: upper for _, _, row in closed}))
    judge = None
    if recorder is not None:
        for (_, _, row), probe in zip(closed, recorder.probes, strict=True):
            linearisations[row] = Linearisation(matrices[row], slopes(program, probe.fixed_point[:samples]))
        judge = Judge(recorder, {row: probe for (_, _, row), probe in zip(closed, recorder.probes, strict=True)},
                      capabilities.settle_tolerance,
                      [slice(group.offset, group.stop) for group in program.groups if group.size])
    u_by_row, contraction, candidates = _choose(program, flat_phases, linearisations, closed, lower, upper,
                                                capabilities, mode, judge)
    choices = [PhaseChoice(step, index, row, contraction[row]) for step, index, row in closed]
    worst = max(choices, key=lambda choice: choice.contraction)
    if worst.contraction >= 1.0 and not force:
        _refuse(program, schedule, capabilities, worst, linearisations[worst.row], lower, upper)
    return AlphaSelection(_alpha_table(schedule, size, capabilities.per_phase, u_by_row), mode, choices, candidates)


def _record_probes(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, closed,
                   noise: np.ndarray, attempts) -> ProbeRecorder | None:
    """The probe run of the first α that settles, trying each u per row of ``attempts`` in turn (the first
    α, else min: its loop may settle where the zero-state estimate says not); None when none settles."""
    size = program.size
    for u_by_row in attempts:
        attempt = ProbeRecorder(program, _alpha_table(schedule, size, capabilities.per_phase, u_by_row)
                                if capabilities.per_phase else 1.0 - u_by_row[closed[0][2]],
                                tolerance=LINEARISATION_TOLERANCE, max_iterations=LINEARISATION_MAX_ITERATIONS)
        try:
            attempt.run(schedule, noise)
        except ConvergenceError:
            continue
        return attempt
    return None


def _refuse(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, worst: PhaseChoice,
            linearisation: Linearisation, lower: np.ndarray, upper: np.ndarray) -> None:
    """Refuse a phase that no α in range makes contract, naming it and the T_min estimate."""
    steps = smallest_contracting_steps(program, schedule, linearisation, worst.row, lower, upper)
    raise AdmcError(
        f"step {worst.step}, phase {worst.phase} (closed loop): no α in [{capabilities.alpha_min:g}, "
        f"{capabilities.alpha_max:g}] makes the loop contract (best contraction factor {worst.contraction:.4f} "
        f"≥ 1 at the fixed points of calibration samples); {steps} uniform steps would work"
        " (T_min estimate); use more steps, or --force to build anyway")


def _cycle(program: BlockProgram, flat_phases, linearisations: dict[int, Linearisation], rows: list[int]
           ) -> BlockCycle | None:
    """The block cycle of these phases with every linearisation's cycle eigenvalues (None: not one cycle)."""
    cycles = [block_cycle(program, flat_phases[row], linearisations[row].slopes) for row in rows]
    if any(cycle is None for cycle in cycles):
        return None
    return BlockCycle(cycles[0].groups, cycles[0].slices,
                      np.concatenate([item.eigenvalues.reshape(-1) for item in cycles]))


def _group_values(cycle: BlockCycle, u: np.ndarray) -> np.ndarray | None:
    """u per cycle group when u is constant on every group, else None."""
    values = np.array([u[part][0] if u[part].size else 1.0 for part in cycle.slices])
    constant = all(np.all(u[part] == value) for part, value in zip(cycle.slices, values, strict=True))
    return values if constant else None


def _global_on_cycle(cycle: BlockCycle, lower: float, upper: float, capabilities: AlphaCapabilities) -> float:
    """One u for every group: a coarse grid, then a fine grid around its best point."""
    def best(grid: np.ndarray) -> tuple[float, float]:
        factors = blockwise_radius(cycle, np.repeat(grid[:, None], len(cycle.groups), axis=1))
        if capabilities.noise_weight > 0:
            factors = factors + capabilities.noise_weight * noise_gain(grid, capabilities.noise_model)
        index = int(np.argmin(factors))
        return float(grid[index]), float(factors[index])

    coarse = np.linspace(lower, upper, GLOBAL_GRID_POINTS)
    u, _ = best(coarse)
    spacing = coarse[1] - coarse[0] if coarse.size > 1 else 0.0
    fine = np.clip(np.linspace(u - spacing, u + spacing, GLOBAL_GRID_POINTS), lower, upper)
    return best(np.concatenate([[u], fine]))[0]


def _radius(cycle: BlockCycle | None, parts: list[Linearisation], u: np.ndarray) -> float:
    """Spectral radius of M(u), worst over the linearisations (from the cycle when u is block-constant)."""
    values = None if cycle is None else _group_values(cycle, u)
    if values is not None:
        return float(blockwise_radius(cycle, values))
    return max(spectral_radius(jacobian, u) for part in parts for jacobian in part.jacobians())


def _choose(program: BlockProgram, flat_phases, linearisations: dict[int, Linearisation], closed, lower, upper,
            capabilities: AlphaCapabilities, mode: str, judge: Judge | None = None):
    """u per closed row, its contraction per row, and the worst contraction of every candidate.

    With a ``judge`` (``auto`` once the probes are recorded) the spectral choice, blends of it and the single
    α grid are run on the probes and the fewest measured iterations wins (``alpha_judge``).

    On a block cycle, block-constant candidates are judged (and the single α found) from the exact cycle
    spectrum, and the channel-wise program is not run: on the benchmark networks it never beat the exact
    block-wise optimum, and it costs an SOCP per phase (docs/alpha-selection.md). Other layouts get the
    channel-wise program, judged by the eigenvalues of M(u).
    """
    groups = [[row] for _, _, row in closed] if capabilities.per_phase else [[row for _, _, row in closed]]
    u_by_row, contraction, chosen_names = {}, {}, []
    candidates: dict = {}
    low, high = float(np.max(lower)), float(np.min(upper))
    for rows in groups:
        parts = [linearisations[row] for row in rows]
        cycle = _cycle(program, flat_phases, linearisations, rows)
        if cycle is not None:
            single = _global_on_cycle(cycle, low, high, capabilities)
        else:
            single = solve_global(parts, low, high, capabilities.noise_weight, capabilities.noise_model)
        options = _spectral_options(cycle, parts, single, lower, upper, capabilities, mode)

        factors = {name: _radius(cycle, parts, u) for name, u in options.items()}
        for name, factor in factors.items():
            candidates[name] = max(candidates.get(name, 0.0), factor)
        # Judged by the spectral radius: auto is never returned worse than global or min in that figure.
        chosen = min(options, key=lambda name: (factors[name], name != mode))
        if mode == "auto" and judge is not None:
            # ... then by the iterations the loop measurably needs, which sees the transients ρ misses.
            options = judge.candidates(options, chosen, lower, upper)
            chosen = judge.choose(rows, options, chosen, capabilities.noise_model, capabilities.noise_weight > 0)
            if chosen not in factors:
                factors[chosen] = _radius(cycle, parts, options[chosen])
        chosen_names.append(chosen)
        for row in rows:
            u_by_row[row] = options[chosen]
            contraction[row] = factors[chosen]
    candidates = {name: float(value) for name, value in candidates.items()}
    candidates["chosen"] = sorted(set(chosen_names))
    if judge is not None and judge.measured:
        # Probe iterations (null: the candidate fell behind and stopped being counted, or diverged).
        candidates["probe_iterations"] = {name: float(value) if np.isfinite(value) else None
                                          for name, value in judge.measured.items()}
    return u_by_row, contraction, candidates


def _spectral_options(cycle: BlockCycle | None, parts: list[Linearisation], single: float, lower: np.ndarray,
                      upper: np.ndarray, capabilities: AlphaCapabilities, mode: str) -> dict[str, np.ndarray]:
    """The candidates judged by the spectral radius: min, the single α and (``auto``) the block-wise search on a
    cycle or the channel-wise program elsewhere."""
    options = {"min": upper, "global": np.full(lower.size, single)}
    if mode != "auto":
        return options
    start = options["global"]
    if cycle is not None:
        group_u = search_blockwise(cycle, np.array([np.max(lower[part]) for part in cycle.slices]),
                                   np.array([max(np.min(upper[part]), np.max(lower[part]))
                                             for part in cycle.slices]),
                                   np.full(len(cycle.groups), single))
        start = start.copy()
        for part, value in zip(cycle.slices, group_u, strict=True):
            start[part] = value
        options["blockwise"] = np.clip(start, lower, upper)
    if cycle is None:
        options["auto"] = solve_channelwise(parts, lower, upper, capabilities.noise_weight,
                                            capabilities.noise_model, start=start)
    return options


def smallest_contracting_steps(program: BlockProgram, schedule: Schedule, linearisation: Linearisation,
                               row: int, lower: np.ndarray, upper: np.ndarray) -> int | str:
    """Fewest uniform steps at which a single α contracts this phase's linearisation (its step scale × T/T')."""
    flat_phases = [phase for phases in schedule.steps for phase in phases]
    phase = flat_phases[row]
    steps = len(schedule.steps)

    def contracts(candidate: int) -> bool:
        scaled = type(phase)(phase.loop, phase.step_scale * steps / candidate, phase.time, phase.inject,
                             phase.hold, phase.init)
        part = Linearisation(loop_matrix(program, scaled), linearisation.slopes)
        u = solve_global([part], float(np.max(lower)), float(np.min(upper)))
        return max(spectral_radius(jacobian, u) for jacobian in part.jacobians()) < 1.0

    low, high = steps, steps
    while not contracts(high):
        low, high = high, high * 2
        if high > LARGEST_STEPS:
            return f"more than {LARGEST_STEPS}"
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if contracts(middle) else (middle, high)
    return high
