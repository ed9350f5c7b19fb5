"""The ideal executor: runs a block program's phases exactly, in float64 (the semantics of admc.ir.program).

Requires: a ``BlockProgram``, a ``Schedule`` and per-channel α (default 0): one vector [n] for every phase, or
a table [phases, n] with one row per phase of the schedule in order (step-major; ``passes.alpha_table``).
Guarantees: open phases run
the feed-forward pass (``open_iterations`` applications; longer when α > 0, until settled); closed phases
iterate to a fixed point (relative change ≤ ``tolerance``) or exactly ``loop_iterations`` times when a
budget is given. A loop that does not settle raises ``ConvergenceError`` naming the step, the phase and
the residual. Only the stored blocks are multiplied: cost is proportional to the non-zero blocks.
With ``float32_products`` (build-time runs of large programs only, see ``float32_products_for``) the weights
are multiplied as float32 copies; states, drives and relaxation stay float64.
``run_ideal`` runs a program for its schedule on the executor its solver needs: discrete solvers on this loop
executor, the ``continuous`` solver on the adaptive continuous-time integration (``admc.runtime.continuous``);
either way the ``ExecutionResult``'s trajectory holds the state at the schedule's grid points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.ir.adm import activate, is_activation
from admc.ir.program import (
    CLOSED,
    INJECT,
    SCALE_CLASSES,
    BlockProgram,
    Phase,
    Schedule,
    block_scale,
    phase_vectors,
)
from admc.passes.continuous_time import CONTINUOUS, solver_kind
from admc.runtime.continuous import run_program_continuous

DEFAULT_TOLERANCE = 1e-13
DEFAULT_MAX_ITERATIONS = 100_000
# A state this large has left any physical range: the loop is diverging (caught long before overflow).
DIVERGENCE_BOUND = 1e8
# With ``stall_window``, a closed loop whose relative change is no smaller than this many iterations ago is
# given up (ConvergenceError): a loop contracting at ρ = 0.999 still falls by 18 % over 200 iterations, and one
# that slow could not reach 1e-6 within the build's 1,666-iteration limits anyway. For trials with a fallback
# (the first of several α tables), so a non-settling trial costs 200 iterations, not the whole limit.
STALL_WINDOW = 200
# At scale a loop application is bound by reading the weights (285 MB of float64 per application at 36M
# weights): float32 copies halve that and the product runs about twice as fast (4096 × 4096 block, 16
# samples, one thread: 38.6 → 19.1 ms). Each product is then rounded to ~6e-8 relative, which build-time runs
# to a tolerance of 1e-6 or looser absorb (their states only set scales, count iterations or linearise);
# below FLOAT32_FROM_WEIGHTS the weights fit in cache and nothing is gained, and simulate and verify always
# run float64.
FLOAT32_FROM_WEIGHTS = 1 << 21
FLOAT32_LOOSEST_TOLERANCE = 1e-6


@dataclass
class ExecutionResult:
    trajectory: np.ndarray  # [T + 1, B, d]
    iterations: list[list[int]] = field(default_factory=list)  # per step, per phase
    # With ``record_settling``: per closed phase (step, phase, fraction of samples whose change fell to the
    # tolerance); a loop that reaches max_iterations is stopped there instead of raising.
    settled: list[tuple[int, int, float]] = field(default_factory=list)
    residuals: list[list[float]] = field(default_factory=list)
    residual_history: list[np.ndarray] = field(default_factory=list)  # per closed phase of step 0: [k, B]


class _CompiledPhase:
    """A phase with its block scales and static vector resolved once."""

    def __init__(self, program: BlockProgram, phase: Phase, blocks: dict | None = None, float32: bool = False):
        """``blocks``: scaled blocks already made for other phases, by their scale factors (phases of one step
        size share them, so a run scales each weight matrix once per distinct step size, not once per phase).
        ``float32``: each block as a C-ordered float32 matrix [rows, columns] instead of the float64
        transpose (the product's fastest form, ``matrix @ activated.T``)."""
        self.phase = phase
        factors = {name: block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES}
        key = tuple(factors[name] for name in SCALE_CLASSES)
        if blocks is not None and key in blocks:
            self.blocks = blocks[key]
        else:
            self.blocks = _scaled_blocks(program, factors)
            if float32:
                self.blocks = [(rows, columns, np.ascontiguousarray(matrix.T, dtype=np.float32))
                               for rows, columns, matrix in self.blocks]
            if blocks is not None:
                blocks[key] = self.blocks
        if program.static_table is None:
            raise ValueError("the program's static injection table is not built (tabulate_static_injection)")
        self.static = program.static_table.vector(phase.step_scale, phase.time, phase.loop)


def _scaled_blocks(program: BlockProgram, factors: dict[str, float]) -> list[tuple[slice, slice, np.ndarray]]:
    """Each non-zero block as (rows, columns, scaled matrix transposed) for the given scale factors."""
    groups = {group.name: group for group in program.groups}
    in_images = None
    if program.phase_blocks is not None:
        in_images = program.phase_blocks[tuple(factors[name] for name in SCALE_CLASSES)]
    blocks = []
    for index, block in enumerate(program.blocks):
        factor = factors[block.scale_class]
        if factor != 0.0:
            row, column = groups[block.row_group], groups[block.column_group]
            # With image sets the factor is already in the realised weights of this phase's set; a factor of 1
            # needs no scaled copy (× 1.0 is exact).
            if in_images is not None:
                matrix = in_images[index]
            else:
                matrix = block.matrix if factor == 1.0 else factor * block.matrix
            blocks.append((slice(row.offset, row.stop), slice(column.offset, column.stop), matrix.T))
    return blocks


class IdealExecutor:
    def __init__(self, program: BlockProgram, alpha: np.ndarray | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, max_iterations: int = DEFAULT_MAX_ITERATIONS,
                 loop_iterations: int | None = None, record_residuals: bool = False, record_settling: bool = False,
                 record_peaks: bool = False, float32_products: bool = False, stall_window: int | None = None):
        self.program = program
        self.float32_products = float32_products
        self.stall_window = stall_window
        alpha = np.zeros(program.size) if alpha is None else np.asarray(alpha, dtype=np.float64)
        # A table holds one row per phase (targets that set α per phase); its rows are selected in run_step.
        self.alpha_table = alpha if alpha.ndim == 2 else None
        self.alpha = alpha[0] if alpha.ndim == 2 else alpha
        self._phase_row = 0
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.loop_iterations = loop_iterations
        self.record_settling = record_settling
        self.record_residuals = record_residuals
        # (channels, activation or None for a linear group, gain): resolved once, not on every iteration.
        self.activations = activation_runs(program)
        whole = len(self.activations) == 1 and self.activations[0][0] == slice(0, program.size)
        self._single_run = self.activations[0][1:] if whole else None
        self.held = [(slice(group.offset, group.stop), group.voltage_scale)
                     for group in program.groups if group.held]
        self._select_alpha(self.alpha)
        self.initialised = [(slice(group.offset, group.stop), group.voltage_scale) for group in program.groups
                            if group.role in ("state", "readout")]
        readout = program.group(program.readout_group)
        self.readout = slice(readout.offset, readout.stop)
        self.readout_scale = readout.voltage_scale
        self.injections = [(slice(program.group(part.group).offset, program.group(part.group).stop),
                            part.matrix.T, part.kind) for part in program.injections]
        self._cache: dict[Phase, _CompiledPhase] = {}
        self._blocks: dict[tuple, list] = {}
        self.extra_drive: Callable[[Phase], np.ndarray] | None = None
        # Per-channel peaks of |state| over every iteration and of |injected drive| over every phase,
        # for choosing voltage scalings (record_peaks).
        self.state_peak = np.zeros(program.size) if record_peaks else None
        self.drive_peak = np.zeros(program.size) if record_peaks else None

    def _select_alpha(self, alpha: np.ndarray) -> None:
        self.alpha = alpha
        self.open_alpha = alpha.copy()
        for channels, _ in self.held:
            self.open_alpha[channels] = 0.0

    def _compiled(self, phase: Phase) -> _CompiledPhase:
        if phase not in self._cache:
            self._cache[phase] = _CompiledPhase(self.program, phase, self._blocks, self.float32_products)
        return self._cache[phase]

    def _activated(self, state: np.ndarray) -> np.ndarray:
        """σ(gain · state) on the activated channels, gain · state on linear ones; a new array."""
        if self._single_run is not None:  # every channel one activation and gain: one call, no copy
            activation, gain = self._single_run
            scaled = state if gain == 1.0 else gain * state
            if activation is None:
                return state.copy() if scaled is state else scaled
            return activate(activation, scaled)
        activated = state.copy()
        for channels, activation, gain in self.activations:
            if activation is not None:
                activated[:, channels] = activate(activation, gain * state[:, channels])
            elif gain != 1.0:
                activated[:, channels] = gain * state[:, channels]
        return activated

    def _apply(self, compiled: _CompiledPhase, state: np.ndarray, drive: np.ndarray) -> np.ndarray:
        """One loop application: relaxed operator on ``state`` with precomputed per-phase ``drive``.

        In open phases held channels are driven by the hold vector, so their relaxation has nothing to
        relax: their α is taken as 0 and their output is the operator's (the explicit step's readout).
        """
        activated = self._activated(state)
        # A drive of the state's shape (every loop but the probes' tiled ones) needs no broadcast view (~9 µs).
        result = drive.copy() if drive.shape == state.shape else np.broadcast_to(drive, state.shape).copy()
        if self.float32_products:
            activated = activated.astype(np.float32)
            for rows, columns, matrix in compiled.blocks:
                result[:, rows] += (matrix @ activated[:, columns].T).T
        else:
            for rows, columns, matrix_transposed in compiled.blocks:
                result[:, rows] += activated[:, columns] @ matrix_transposed
        alpha = self.alpha if compiled.phase.loop == CLOSED else self.open_alpha
        updated = alpha * state + (1.0 - alpha) * result
        if self.state_peak is not None and updated.size:
            np.maximum(self.state_peak, np.max(np.abs(updated), axis=0), out=self.state_peak)
        return updated

    def _drive(self, compiled: _CompiledPhase, inject: np.ndarray, hold: np.ndarray | None) -> np.ndarray:
        """Static vector plus injections; feedback-kind parts read the hold vector in open phases."""
        drive = np.broadcast_to(compiled.static, (inject.shape[0], compiled.static.size)).copy()
        if self.extra_drive is not None:  # per-sample injections (the conditioning interface)
            drive += self.extra_drive(compiled.phase)
        for rows, matrix_transposed, kind in self.injections:
            source = inject if (kind == INJECT or compiled.phase.loop == CLOSED) else hold
            drive[:, rows] += source @ matrix_transposed
        if self.drive_peak is not None and drive.size:
            np.maximum(self.drive_peak, np.max(np.abs(drive), axis=0), out=self.drive_peak)
        return drive

    def run_step(self, step: int, phases: list[Phase], x: np.ndarray, state: np.ndarray,
                 result: ExecutionResult) -> tuple[np.ndarray, np.ndarray]:
        outputs: dict[str, np.ndarray] = {"x": x}
        iterations, residuals = [], []
        for index, phase in enumerate(phases):
            if self.alpha_table is not None:
                self._select_alpha(self.alpha_table[self._phase_row])
            self._phase_row += 1
            compiled = self._compiled(phase)
            inject, hold, initial = phase_vectors(phase, outputs)
            if initial is not None:
                for channels, scale in self.initialised:
                    state[:, channels] = scale * initial
            drive = self._drive(compiled, inject, hold)
            if phase.loop == CLOSED:
                state, count, residual = self._closed(step, index, compiled, drive, state, result)
                readout = state[:, self.readout] / self.readout_scale
            else:
                state, readout, count, residual = self._open(step, index, compiled, drive, hold, state)
            outputs[f"phase:{index}"] = readout
            iterations.append(count)
            residuals.append(residual)
        result.iterations.append(iterations)
        result.residuals.append(residuals)
        return outputs[f"phase:{len(phases) - 1}"], state

    def _hold(self, state: np.ndarray, hold: np.ndarray | None) -> np.ndarray:
        for channels, scale in self.held:
            state[:, channels] = scale * hold
        return state

    def _open(self, step: int, index: int, compiled: _CompiledPhase, drive: np.ndarray,
              hold: np.ndarray | None, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, float]:
        state = self._hold(state.copy(), hold)
        settle = bool(np.any(self.open_alpha))
        count, residual = 0, 0.0
        while True:
            updated = self._apply(compiled, state, drive)
            count += 1
            readout = updated[:, self.readout] / self.readout_scale
            updated = self._hold(updated, hold)
            residual = _relative_change(updated, state)
            state = updated
            if count >= self.program.open_iterations and (not settle or residual <= self.tolerance):
                return state, readout, count, residual
            _check_progress(step, index, "open", count, residual, self.max_iterations, state)

    def _closed(self, step: int, index: int, compiled: _CompiledPhase, drive: np.ndarray,
                state: np.ndarray, result: ExecutionResult) -> tuple[np.ndarray, int, float]:
        history, past = [], []
        count, residual = 0, np.inf
        while True:
            updated = self._apply(compiled, state, drive)
            count += 1
            # ndarray methods, not np.max: the same reductions without numpy's Python wrapper (~1.5 µs each, which
            # is most of an iteration on the smallest programs).
            magnitude = np.abs(updated).max(axis=1)
            change = np.abs(updated - state).max(axis=1) / np.maximum(1.0, magnitude)
            residual = float(change.max()) if change.size else 0.0
            state = updated
            if self.record_residuals and step == 0:
                history.append(change)
            if self.loop_iterations is not None:
                if count >= self.loop_iterations:
                    break
            elif residual <= self.tolerance:
                break
            if self.record_settling and count >= self.max_iterations and np.all(np.isfinite(state)):
                break  # reported per sample below, not raised
            if self.stall_window is not None and self.loop_iterations is None:
                past.append(residual)
                if count > self.stall_window and residual >= past[count - 1 - self.stall_window]:
                    raise ConvergenceError(f"step {step}, phase {index} (closed loop): no progress in "
                                           f"{self.stall_window} iterations (relative change {residual:.3e})")
            _check_progress(step, index, "closed", count, residual, self.max_iterations, state,
                            float(magnitude.max()) if magnitude.size else 0.0)
        if history:
            result.residual_history.append(np.stack(history))
        if self.record_settling:
            result.settled.append((step, index, float(np.mean(change <= self.tolerance)) if change.size else 1.0))
        return state, count, residual

    def run(self, schedule: Schedule, noise: np.ndarray,
            extra_drive: Callable[[Phase], np.ndarray] | None = None) -> ExecutionResult:
        """``extra_drive(phase)``: a per-sample [B, n] vector added to each phase's injection (conditions)."""
        self.extra_drive = extra_drive
        x = np.asarray(noise, dtype=np.float64)
        state = np.zeros((x.shape[0], self.program.size))
        for channels, scale in self.initialised:
            state[:, channels] = scale * x
        self._phase_row = 0
        if self.alpha_table is not None and len(self.alpha_table) != sum(len(phases) for phases in schedule.steps):
            raise ValueError(f"α table has {len(self.alpha_table)} rows, the schedule has "
                             f"{sum(len(phases) for phases in schedule.steps)} phases")
        result = ExecutionResult(np.empty((len(schedule.steps) + 1, *x.shape)))
        result.trajectory[0] = x
        for step, phases in enumerate(schedule.steps):
            x, state = self.run_step(step, phases, x, state, result)
            result.trajectory[step + 1] = x
        return result


def activation_runs(program: BlockProgram) -> list[tuple[slice, str | None, float]]:
    """(channels, activation or None for linear, σ gain) per run of adjacent groups that share activation and
    gain: σ applied run by run gives the same values as group by group, in fewer numpy calls (on the smallest
    programs those calls, not the arithmetic, are an iteration's cost)."""
    runs: list[tuple[slice, str | None, float]] = []
    for group in sorted(program.groups, key=lambda group: group.offset):
        activation = group.activation if is_activation(group.activation) else None
        if runs and runs[-1][0].stop == group.offset and runs[-1][1:] == (activation, group.sigma_gain):
            runs[-1] = (slice(runs[-1][0].start, group.stop), activation, group.sigma_gain)
        else:
            runs.append((slice(group.offset, group.stop), activation, group.sigma_gain))
    return runs


def _relative_change(updated: np.ndarray, previous: np.ndarray) -> float:
    if updated.size == 0:
        return 0.0
    scale = np.maximum(1.0, np.max(np.abs(updated), axis=1))
    return float(np.max(np.max(np.abs(updated - previous), axis=1) / scale))


def _check_progress(step: int, phase: int, loop: str, count: int, residual: float, limit: int,
                    state: np.ndarray, peak: float | None = None) -> None:
    """``peak``: max |state| when the caller has it already."""
    peak = float(np.max(np.abs(state), initial=0.0)) if peak is None else peak
    if not np.isfinite(residual) or not np.isfinite(peak) or peak > DIVERGENCE_BOUND:
        raise ConvergenceError(f"step {step}, phase {phase} ({loop} loop): the loop diverged after {count} "
                               f"iterations (|state| reached {peak:.3e}, relative change {residual:.3e})")
    if count >= limit:
        raise ConvergenceError(f"step {step}, phase {phase} ({loop} loop): not settled after {count} "
                               f"iterations (relative change {residual:.3e}); the step may be too large "
                               "for the fixed point to contract")


def stored_weights(program: BlockProgram) -> int:
    """The weights one loop application multiplies: every stored block's entries."""
    return sum(block.matrix.size for block in program.blocks)


def float32_products_for(program: BlockProgram, tolerance: float) -> bool:
    """Whether a build-time run of ``program`` to ``tolerance`` multiplies in float32 (see FLOAT32_FROM_WEIGHTS)."""
    return stored_weights(program) >= FLOAT32_FROM_WEIGHTS and tolerance >= FLOAT32_LOOSEST_TOLERANCE


def samples_within_work(program: BlockProgram, work: int, fewest: int, most: int) -> int:
    """How many samples a build-time run of ``program`` gets: ``work`` (sample × weights) over its weights, within
    [fewest, most] (a run's cost then stops growing as weights × samples at scale)."""
    return int(np.clip(work // max(stored_weights(program), 1), fewest, most))


def run_ideal(program: BlockProgram, schedule: Schedule, alpha: np.ndarray | None, noise: np.ndarray,
              drive=None, **options) -> ExecutionResult:
    """The ideal execution of ``program`` for ``schedule`` on noise [B, d]. ``drive``: a conditional program's
    per-sample injection (``phase -> [B, n]``), or None; ``options`` are the loop executor's (tolerance,
    loop_iterations, record_residuals...)."""
    if solver_kind(schedule.solver) == CONTINUOUS:
        if drive is not None:
            raise AdmcError("conditional programs run on discrete-time solvers only (the continuous executor "
                            "has no per-sample condition drive)")
        return ExecutionResult(run_program_continuous(program, schedule.grid, noise))
    return IdealExecutor(program, alpha, **options).run(schedule, noise, drive)


def first_settled(candidates: Iterable, run: Callable) -> tuple | None:
    """The first of ``candidates`` whose ``run(candidate, stall_window)`` does not raise ``ConvergenceError`` (its
    loops settle), with what the run returned; None when none does. Candidates after it are not run. Every
    candidate but the last is run with ``STALL_WINDOW`` (its executor's ``stall_window``): a stalled loop there
    is given up at once, as the next candidate is tried anyway; the last runs to its limit."""
    candidates = list(candidates)
    for position, candidate in enumerate(candidates):
        try:
            return candidate, run(candidate, STALL_WINDOW if position < len(candidates) - 1 else None)
        except ConvergenceError:
            continue
    return None
