"""α selection pass: the analog skip fraction per channel (and per phase where the target can), chosen once.

Requires: a ``BlockProgram`` with its static table, a ``Schedule``, the target's α capabilities
(``AlphaCapabilities.of``) and a mode: ``auto`` (channel-wise, the default), ``global`` (one α per phase, or
per program), ``min`` (the smallest α the bounds allow) or the path of a ``.npy`` α table. The bounds on
u = 1 − α are the target's limits from the start: its α range and, given ``row_peaks`` m_i (max |weight|
feeding channel i in the target's units) and ``beta_max``, the gain range (1 − α_i) m_i ≤ β_max.

Guarantees: α within every bound, so the fixed points are unchanged (Eq. 10); ``alpha`` is [n] or, when
the target sets α per phase, [phases, n] (open phases get α = 0). How ``auto`` chooses
(docs/alpha-selection.md):
1. seeded samples (seed 7) run once to their fixed points with the smallest α, or where that does not settle
   with ``settling_alpha``; σ' there gives the linearisations J_k (the fixed points do not depend on α). A
   backend whose calibration run already ran the loops (``calibration_probes``: the AOC's state scaling, seed 0)
   hands those loops over instead, when they hold at least as many samples;
2. per phase (or for the program) the candidates of ``alpha_candidates``: min, the exact single α, the exact
   block-wise α on a block cycle, and the channel-wise α of ``alpha_channelwise``'s cone programs (Clarabel),
   each with its worst spectral radius at the linearisations;
3. the candidates' loops run on the recorded states, and the fewest iterations wins (min kept unless another
   saves an iteration per phase);
4. acceptance (``alpha_acceptance``): fresh samples (seed 11) must settle in every closed phase with the α
   chosen, whatever the mode; otherwise the build is refused naming the step and phase and the fewest
   uniform steps at which this pass builds a program that settles (``force`` builds anyway).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from admc.core.errors import AdmcError
from admc.ir.program import CLOSED, SCALE_CLASSES, BlockProgram, Schedule, block_scale
from admc.passes.alpha_acceptance import (
    ACCEPTANCE_LIMIT,
    LARGEST_STEPS,
    SETTLE_MARGIN,
    Acceptance,
    settle_on_fresh_samples,
    smallest_settling_steps,
)
from admc.passes.alpha_candidates import GroupChoice, candidates, cycle_eigenvalues, judge, loop_matrices
from admc.passes.alpha_cycle import BlockCycle, block_cycle
from admc.passes.alpha_probe import PhaseProbe, adopted_probes, record_probes
from admc.passes.alpha_problem import Linearisation, solve_global
from admc.passes.loop_jacobian import loop_matrix, slope_bounds, slopes
from admc.runtime.conditioning import ConditionSampler
from admc.runtime.executor import IdealExecutor, first_settled, float32_products_for, stored_weights

MODES = ("auto", "global", "min")
LINEARISATION_SAMPLES = 8  # fewer on large programs: LINEARISATION_WORK channel-samples at most
LINEARISATION_WORK = 40_000
# Linearisations in all (every closed phase keeps at least one): the fixed points of neighbouring phases are
# alike, and each costs a dense eigenproblem per candidate and per cone program.
TOTAL_LINEARISATIONS = 32
# Cone programs: this many in all, shared between the groups of phases that each choose an α (at least 6
# each), and within a group between its one or two descents (at least 3 each).
TOTAL_CONE_PROGRAMS = 96
# Flops of cycle products (the block cycle's eigenvalues, one product per linearisation) a build spends at most
# (about a second): small programs keep every linearisation, a 36M-weight one keeps one (18 GFLOP each).
CYCLE_WORK = 20_000_000_000
# Distinct from the loop budget's seed (1), the acceptance's (11) and the benchmark's (0).
LINEARISATION_SEED = 7
PROBE_SAMPLES = 32
# Linearisation points need σ' to a few digits, not the executor's 1e-13.
LINEARISATION_TOLERANCE = 1e-6
# A loop that needs more is refused by the acceptance anyway: no linearisation waits longer for it.
LINEARISATION_MAX_ITERATIONS = ACCEPTANCE_LIMIT // SETTLE_MARGIN
# settling_alpha: the zero-state single α, then heavier damping, checked on a few seeded samples.
SETTLING_SAMPLES = 8
SETTLING_DAMPING = (1.0, 0.5, 0.25, 0.1)
# The pass runs many small dense eigenproblems and probe loops: BLAS threads only add synchronisation there
# (a 130 × 130 eig took 0.48 s with OpenBLAS's 2 threads on an oversubscribed machine). One thread inside
# the pass; the caller's setting is restored after.
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
    radii: dict[str, float] = field(default_factory=dict)  # every candidate's, for the report


@dataclass
class AlphaSelection:
    alpha: np.ndarray
    mode: str
    phases: list[PhaseChoice] = field(default_factory=list)
    candidates: dict = field(default_factory=dict)  # worst contraction per candidate, the chosen, iterations
    acceptance: Acceptance | None = None
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return {"mode": self.mode, "per_phase": bool(self.alpha.ndim == 2),
                "alpha_min": float(np.min(self.alpha, initial=1.0)),
                "alpha_max": float(np.max(self.alpha, initial=0.0)),
                "distinct_values": int(np.unique(np.round(self.alpha, 12)).size),
                "candidates": self.candidates,
                "acceptance": None if self.acceptance is None else self.acceptance.report(),
                "notes": list(self.notes),
                "phases": [{"step": choice.step, "phase": choice.phase, "contraction_estimate": choice.contraction,
                            "radii": choice.radii} for choice in self.phases]}


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


def settling_alpha(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities,
                   lower: np.ndarray | None = None, upper: np.ndarray | None = None,
                   matrices: dict | None = None) -> np.ndarray:
    """A cheap α whose loops settle, for runs that need settled loops before α is chosen (the linearisation
    points when the smallest α does not settle): the first of ``settling_tables`` whose loops settle on a few
    seeded samples, the last when none does."""
    noise = np.random.default_rng(LINEARISATION_SEED).standard_normal((SETTLING_SAMPLES, program.state_dimension))
    tables = settling_tables(program, schedule, capabilities, lower, upper, matrices)
    if not closed_phases(schedule):
        return tables[0]
    found = first_settled(tables, lambda table, stall_window: IdealExecutor(
        program, table, tolerance=LINEARISATION_TOLERANCE, max_iterations=LINEARISATION_MAX_ITERATIONS,
        float32_products=float32_products_for(program, LINEARISATION_TOLERANCE),
        stall_window=stall_window).run(schedule, noise))
    return tables[-1] if found is None else found[0]


def settling_tables(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities,
                    lower: np.ndarray | None = None, upper: np.ndarray | None = None,
                    matrices: dict | None = None) -> list[np.ndarray]:
    """The α tables a settling α is tried from, in order: the exact single α of σ' at the zero state (no cone
    program), then the same with u halved, quartered, … (heavier damping: M(u) → I − u(I − J) contracts for
    small u wherever every eigenvalue of J has real part below 1). One table when there is no loop to relax."""
    size = program.size
    if lower is None or upper is None:
        lower, upper = bounds(size, capabilities, None, None)
    closed = closed_phases(schedule)
    if not closed:  # explicit solvers: no loop to relax
        return [_alpha_table(schedule, size, capabilities.per_phase, {})]
    flat = [phase for phases in schedule.steps for phase in phases]
    if matrices is None:
        matrices = loop_matrices(program, flat, [row for _, _, row in closed], loop_matrix)
    zero_state = slope_bounds(program)[None, :]
    groups = [[row] for _, _, row in closed] if capabilities.per_phase else [[row for _, _, row in closed]]
    u_by_row = {}
    linearisations = {row: Linearisation(matrices[row], zero_state) for row in matrices}
    for rows in groups:
        cycle = _cycle(program, flat, linearisations, rows)
        single = solve_global([linearisations[row] for row in rows], float(np.max(lower)), float(np.min(upper)),
                              eigenvalues=None if cycle is None else cycle_eigenvalues(cycle))
        u_by_row.update({row: np.clip(np.full(size, single), lower, upper) for row in rows})
    return [_alpha_table(schedule, size, capabilities.per_phase,
                         {row: np.clip(shrink * u, lower, upper) for row, u in u_by_row.items()})
            for shrink in SETTLING_DAMPING]


def select_alpha(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str = "auto",
                 row_peaks: np.ndarray | None = None, beta_max: float | None = None,
                 force: bool = False, calibration_probes: list[PhaseProbe] | None = None,
                 conditions: ConditionSampler | None = None) -> AlphaSelection:
    """``calibration_probes``: the closed loops of a settled run of ``program`` on this schedule already made (a
    calibration run's ``ProbeRecorder``, in ``program``'s units), used instead of a probe run of its own when it
    holds enough samples. ``conditions``: a conditional program's draws for the pass's probes and acceptance."""
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        selection = _choose(program, schedule, capabilities, mode, row_peaks, beta_max, calibration_probes,
                            conditions)
        if selection.acceptance is not None and not selection.acceptance.settled and not force:
            _refuse(program, schedule, capabilities, mode, row_peaks, beta_max, selection, conditions)
        return selection


def _choose(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str,
            row_peaks: np.ndarray | None, beta_max: float | None,
            calibration_probes: list[PhaseProbe] | None = None, conditions: ConditionSampler | None = None
            ) -> AlphaSelection:
    """The selection and its acceptance on fresh samples (not yet refused)."""
    size = program.size
    lower, upper = bounds(size, capabilities, row_peaks, beta_max)
    closed = closed_phases(schedule)
    if mode not in MODES:
        alpha = read_alpha_file(mode, size, phase_count(schedule), capabilities)
        if np.any(1.0 - alpha > upper + 1e-12):
            channel = int(np.flatnonzero(np.any(np.atleast_2d(1.0 - alpha) > upper + 1e-12, axis=0))[0])
            raise AdmcError(f"{mode}: α of channel {channel} is below {1 - upper[channel]:.4f}, the smallest that "
                            "keeps its weights within the gain range")
        selection = AlphaSelection(alpha, "file")
    elif mode == "min" or not closed:
        selection = AlphaSelection(_alpha_table(schedule, size, capabilities.per_phase,
                                                {row: upper for _, _, row in closed}), "min")
    else:
        selection = _search(program, schedule, capabilities, mode, closed, lower, upper, calibration_probes,
                            conditions)
    if closed:
        selection.acceptance = settle_on_fresh_samples(program, schedule, selection.alpha,
                                                       capabilities.settle_tolerance, conditions)
    return selection


def _search(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str, closed,
            lower: np.ndarray, upper: np.ndarray, calibration_probes: list[PhaseProbe] | None = None,
            conditions: ConditionSampler | None = None) -> AlphaSelection:
    size = program.size
    flat = [phase for phases in schedule.steps for phase in phases]
    rows = [row for _, _, row in closed]
    matrices = loop_matrices(program, flat, rows, loop_matrix)
    samples = int(np.clip(LINEARISATION_WORK // max(size, 1), 2, LINEARISATION_SAMPLES))
    recorded = int(np.clip(LINEARISATION_WORK // max(size, 1), samples, PROBE_SAMPLES))
    noise = np.random.default_rng(LINEARISATION_SEED).standard_normal((recorded, program.state_dimension))
    minimum = _alpha_table(schedule, size, capabilities.per_phase, {row: upper for row in rows})
    # The recorder's executor also runs the judge's loops, to the settle tolerance.
    float32 = float32_products_for(program, min(LINEARISATION_TOLERANCE, capabilities.settle_tolerance))
    if (calibration_probes is not None and len(calibration_probes) == len(rows)
            and calibration_probes[0].start.shape[0] >= recorded):
        # The calibration run's loops (their starts, drives and fixed points do not depend on α), not a run
        # of their own: at 36M weights each run of the loops costs seconds.
        recorder = IdealExecutor(program, minimum, tolerance=LINEARISATION_TOLERANCE,
                                 max_iterations=LINEARISATION_MAX_ITERATIONS, float32_products=float32)
        probes = dict(zip(rows, adopted_probes(recorder, calibration_probes, recorded), strict=True))
    else:
        recorder = record_probes(program, schedule, noise, (
            lambda: minimum, lambda: settling_alpha(program, schedule, capabilities, lower, upper, matrices)),
            LINEARISATION_TOLERANCE, LINEARISATION_MAX_ITERATIONS, float32,
            None if conditions is None else conditions(program, recorded, LINEARISATION_SEED))
        probes = {} if recorder is None else dict(zip(rows, recorder.probes, strict=True))
    zero_state = slope_bounds(program)[None, :]
    linearisations = {row: Linearisation(matrices[row], slopes(program, probes[row].fixed_point[:samples])
                                         if row in probes else zero_state) for row in rows}
    notes = [] if recorder is not None else ["no seeded sample settled: linearised at the zero state"]
    groups = [[row] for row in rows] if capabilities.per_phase else [rows]
    u_by_row, choices, summary = {}, {}, {"chosen": [], "probe_iterations": {}}
    previous = None
    for group in groups:
        per_phase = max(1, TOTAL_LINEARISATIONS // len(rows))
        trimmed = {row: Linearisation(linearisations[row].source, linearisations[row].slopes[:per_phase])
                   for row in group}
        parts = list(trimmed.values())
        count, allowed = sum(np.atleast_2d(item.slopes).shape[0] for item in parts), cycle_products_allowed(program)
        note = (f"block cycle: {allowed} of {count} linearisations per group of phases (a cycle product "
                "multiplies every weight by the smallest group's width; CYCLE_WORK)")
        if count > allowed and note not in notes:
            notes.append(note)
        choice = candidates(parts, _cycle(program, flat, trimmed, group), lower, upper, mode,
                            capabilities.noise_weight, capabilities.noise_model,
                            max(6, TOTAL_CONE_PROGRAMS // len(groups)), previous)
        if mode == "auto" and recorder is not None:
            choice = judge(recorder, [probes[row] for row in group], choice, capabilities.settle_tolerance,
                           capabilities.noise_model, capabilities.noise_weight > 0)
        chosen = "global" if mode == "global" else choice.chosen
        _summarise(summary, choice, chosen)
        notes.extend(note for note in choice.notes if note not in notes)
        for row in group:
            u_by_row[row], choices[row] = choice.options[chosen], (choice.radii[chosen], choice.radii)
        previous = choice.options[chosen]
    phases = [PhaseChoice(step, index, row, *choices[row]) for step, index, row in closed]
    summary["chosen"] = sorted(set(summary["chosen"]))
    return AlphaSelection(_alpha_table(schedule, size, capabilities.per_phase, u_by_row), mode, phases,
                          summary, notes=notes)


def _summarise(summary: dict, choice: GroupChoice, chosen: str) -> None:
    """Worst radius per candidate over the groups, the names chosen and the probe iterations (summed)."""
    for name, radius in choice.radii.items():
        summary[name] = max(summary.get(name, 0.0), float(radius))
    summary["chosen"].append(chosen)
    for name, total in choice.measured.items():
        previous = summary["probe_iterations"].get(name, 0.0)
        summary["probe_iterations"][name] = None if previous is None or not np.isfinite(total) else previous + total


def _refuse(program: BlockProgram, schedule: Schedule, capabilities: AlphaCapabilities, mode: str,
            row_peaks: np.ndarray | None, beta_max: float | None, selection: AlphaSelection,
            conditions: ConditionSampler | None = None) -> None:
    """Refuse a choice whose loops do not settle on fresh samples, with the T_min this pass can build."""
    def choose(variant: BlockProgram, uniform: Schedule) -> None:
        result = _choose(variant, uniform, capabilities, mode, row_peaks, beta_max, conditions=conditions)
        if not result.acceptance.settled:
            raise AdmcError("does not settle")

    if mode not in MODES:  # a given α table is for this schedule only: no other T to try
        raise AdmcError(f"{mode}: {selection.acceptance.failure.split(';')[0]} on fresh samples with this α "
                        "table; choose another, or --force to build anyway")
    steps = smallest_settling_steps(program, schedule, choose)
    fewest = (f"{steps} uniform steps settle" if steps is not None
              else f"no uniform grid up to {LARGEST_STEPS} steps settles")
    raise AdmcError(f"α ({selection.mode}): {selection.acceptance.failure.split(';')[0]} on fresh samples; "
                    f"T_min: {fewest} (found by this pass); use more steps, or --force to build anyway")


def cycle_products_allowed(program: BlockProgram) -> int:
    """How many cycle products (one per linearisation) ``CYCLE_WORK`` pays for: each multiplies every weight by
    the smallest group's width, 2 × weights × width flops (18 GFLOP at 36M weights, d = 256)."""
    weights = stored_weights(program)
    width = min((group.size for group in program.groups if group.size), default=1)
    return max(1, int(CYCLE_WORK // max(2 * weights * width, 1)))


def _cycle(program: BlockProgram, flat_phases, linearisations: dict[int, Linearisation], rows: list[int]
           ) -> BlockCycle | None:
    """The block cycle of these phases with their linearisations' cycle eigenvalues (None: not one cycle);
    above ``cycle_products_allowed`` linearisations, that many, evenly spread over the phases in order."""
    pairs = [(row, index) for row in rows for index in range(np.atleast_2d(linearisations[row].slopes).shape[0])]
    allowed = cycle_products_allowed(program)
    if len(pairs) > allowed:
        pairs = [pairs[int(index)] for index in np.unique(np.round(np.linspace(0, len(pairs) - 1, allowed)))]
    chosen = {row: [index for kept, index in pairs if kept == row] for row in dict.fromkeys(row for row, _ in pairs)}
    # Phases of one step size at the same linearisation point (a uniform grid, the zero state) share one cycle
    # product: its eigenproblem is solved once, and repeated in the result as before.
    solved: dict[tuple, BlockCycle | None] = {}
    cycles = []
    for row, indices in chosen.items():
        phase = flat_phases[row]
        slopes = np.atleast_2d(linearisations[row].slopes)[indices]
        key = (tuple(block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES),
               np.shape(slopes), np.ascontiguousarray(slopes).tobytes())
        if key not in solved:
            solved[key] = block_cycle(program, phase, slopes)
        cycles.append(solved[key])
    if any(cycle is None for cycle in cycles):
        return None
    return BlockCycle(cycles[0].groups, cycles[0].slices,
                      np.concatenate([item.eigenvalues.reshape(-1) for item in cycles]), cycles[0].tails)


