"""Continuous-time execution: dx/dt = f(x, t) integrated by an adaptive high-order solver, for the source
model (the reference's ``continuous`` solver) and for a block program (the ideal executor of a continuous
schedule).

Requires: a velocity f(x [B, d], t [B]) → [B, d], or a ``BlockProgram`` whose static injection table is
tabulated densely (``passes/continuous_time.py``); a grid t_0 < … < t_T and noise x_0 [B, d].
Guarantees: ``integrate_continuous`` returns the trajectory at the grid points, solved by scipy's DOP853
(8th order) with rtol = atol = 1e-10 on the whole batch as one system; a non-finite state or a failed solve
raises ``ConvergenceError`` naming the time. ``ProgramVelocity`` evaluates a program's velocity as one
feed-forward pass in topological order of its groups (each stored block multiplied once), the time
terms interpolated by a cubic spline through the table: the program's f(x, t) exactly at the table's times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.ir.adm import activate, is_activation
from admc.ir.program import FIXED, INJECT, STEP, BlockProgram

RELATIVE_TOLERANCE = 1e-10
ABSOLUTE_TOLERANCE = 1e-10
METHOD = "DOP853"


def integrate_continuous(velocity: Callable[[np.ndarray, np.ndarray], np.ndarray], noise: np.ndarray,
                         grid: np.ndarray, rtol: float = RELATIVE_TOLERANCE,
                         atol: float = ABSOLUTE_TOLERANCE) -> tuple[np.ndarray, int]:
    """The trajectory [T + 1, B, d] at ``grid`` and the number of batched velocity evaluations."""
    state = np.asarray(noise, dtype=np.float64)
    batch, dimension = state.shape
    grid = np.asarray(grid, dtype=np.float64)

    def right_hand_side(time: float, flat: np.ndarray) -> np.ndarray:
        values = np.asarray(velocity(flat.reshape(batch, dimension), np.full(batch, time)), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ConvergenceError(f"continuous solve (t = {time:.6g}): the velocity became non-finite (diverged)")
        return values.ravel()

    from scipy.integrate import solve_ivp  # scipy loads when a continuous solve runs, not at start-up

    solution = solve_ivp(right_hand_side, (float(grid[0]), float(grid[-1])), state.ravel(), method=METHOD,
                         t_eval=grid, rtol=rtol, atol=atol)
    if solution.status != 0 or solution.y.shape[1] != grid.size:
        raise ConvergenceError(f"continuous solve failed at t = {solution.t[-1]:.6g}: {solution.message}")
    trajectory = solution.y.T.reshape(grid.size, batch, dimension)
    return trajectory, int(solution.nfev)


class ProgramVelocity:
    """f(x, t) of a block program: held groups read x, every other group is computed once, in order."""

    def __init__(self, program: BlockProgram, block_matrices: list[np.ndarray] | None = None):
        if program.static_table is None:
            raise AdmcError("the program's static injection table is not built (tabulate_static_injection)")
        self.program = program
        self.groups = {group.name: group for group in program.groups}
        matrices = block_matrices if block_matrices is not None else [block.matrix for block in program.blocks]
        # Velocity rows: fixed and step blocks at unit step scale; feedback blocks are off (the held input
        # replaces the loop's feedback), as in an open phase.
        self.incoming: dict[str, list[tuple[str, np.ndarray]]] = {name: [] for name in self.groups}
        for block, matrix in zip(program.blocks, matrices, strict=True):
            if block.scale_class in (FIXED, STEP):
                self.incoming[block.row_group].append((block.column_group, np.asarray(matrix).T))
        self.feedback_injections = [(part.group, part.matrix.T) for part in program.injections
                                    if part.kind != INJECT]
        self.order = self._topological_order()
        table = program.static_table
        # Feedback-class biases are off in open phases, like their blocks.
        self.constant = table.constants.get(FIXED, 0.0) + table.constants.get(STEP, 0.0)
        tables = [table.time_tables[name] for name in (FIXED, STEP) if name in table.time_tables]
        self.spline = None
        if tables and table.times.size >= 2:
            from scipy.interpolate import CubicSpline

            self.spline = CubicSpline(table.times, sum(tables), axis=0)
        elif tables:
            self.constant = self.constant + sum(tables)[0]

    def _topological_order(self) -> list[str]:
        held = {name for name, group in self.groups.items() if group.held}
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            if state.get(name) == 2 or name in held:
                return
            if state.get(name) == 1:
                raise AdmcError(f"internal: the feed-forward graph has a cycle through group '{name}'")
            state[name] = 1
            for column, _ in self.incoming[name]:
                visit(column)
            state[name] = 2
            order.append(name)

        for name in self.groups:
            visit(name)
        return order

    def static(self, time: float) -> np.ndarray:
        if self.spline is None:
            return np.broadcast_to(self.constant, (self.program.size,))
        return self.constant + self.spline(time)

    def activated(self, name: str, voltage: np.ndarray) -> np.ndarray:
        group = self.groups[name]
        if is_activation(group.activation):
            return activate(group.activation, group.sigma_gain * voltage)
        return group.sigma_gain * voltage if group.sigma_gain != 1.0 else voltage

    def layer_inputs(self, x: np.ndarray, time: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Voltages of the held groups and the static-plus-injected drive of every channel."""
        voltages = {name: group.voltage_scale * x for name, group in self.groups.items() if group.held}
        drive = np.broadcast_to(self.static(time), (x.shape[0], self.program.size)).copy()
        for name, matrix_transposed in self.feedback_injections:
            group = self.groups[name]
            drive[:, group.offset:group.stop] += x @ matrix_transposed
        return voltages, drive

    def row_voltage(self, name: str, voltages: dict[str, np.ndarray], drive: np.ndarray) -> np.ndarray:
        group = self.groups[name]
        total = drive[:, group.offset:group.stop].copy()
        for column, matrix_transposed in self.incoming[name]:
            total += self.activated(column, voltages[column]) @ matrix_transposed
        return total

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        time = float(np.asarray(t).reshape(-1)[0])
        voltages, drive = self.layer_inputs(x, time)
        for name in self.order:
            voltages[name] = self.row_voltage(name, voltages, drive)
        readout = self.program.readout_group
        if self.groups[readout].held:
            return self.row_voltage(readout, voltages, drive) / self.groups[readout].voltage_scale
        return voltages[readout] / self.groups[readout].voltage_scale


def run_program_continuous(program: BlockProgram, grid: np.ndarray, noise: np.ndarray,
                           rtol: float = RELATIVE_TOLERANCE, atol: float = ABSOLUTE_TOLERANCE) -> np.ndarray:
    """The ideal continuous execution of a program: its trajectory [T + 1, B, d] at ``grid``."""
    trajectory, _ = integrate_continuous(ProgramVelocity(program), noise, grid, rtol, atol)
    return trajectory
