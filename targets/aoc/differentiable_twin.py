"""The AOC bundle twin, differentiable in the program's arrays: what fine-tuning trains through.

The loop is the bundle twin's (``twin.py``): its arrays, static errors, measured chain, phases, held and
relaxed channels, injection clip and readout, read from the same ``AocTwin``; only the program's weights, static
injections and injection matrices are torch values here (``admc.finetune.program_torch``), moved into the optics
by ``differentiable_optics``. Read noise is left out: it is zero-mean, the readout averages it, and the fixed
point of each phase carries what fine-tuning can correct (static errors, the σ·LED shape, quantisation).

Differentiation: implicit, at each phase's fixed point. A noise-free closed phase (or an open one that relaxes)
is solved to the twin's own convergence test (relative change ≤ its tolerance) without a graph; one more
application F(z*) carries the graph, and its gradient v is completed to (I − ∂F/∂z)⁻ᵀ v. Why: the loop runs
~140 iterations per phase on two moons; backpropagating through all of them stores every one and costs as much
again, while the fixed point's gradient needs only the last application, and it is exact at the fixed point the
twin reads out (the machine's answer), not an artefact of a truncated run. How the fixed point is found changes
neither it nor its gradient, so it is found by the loop without its relaxation (``differentiable_loop``: the same
fixed points, contracting by ~0.08 instead of ~0.82 on two moons: ~14 applications instead of ~140) and the adjoint
by the same splitting; where that splitting does not contract, the twin's own iteration and the adjoint iteration
g ← v + Jᵀ g run instead (``fixed_point``). Open phases whose loop is exact after ``open_iterations`` (α = 0 off the
held channels) are unrolled instead.

Requires: an AOC bundle with one image set, and arrays shaped as its program. Guarantees: with the arrays of
the compiled program (ΔW = 0), no noise and float64, :meth:`DifferentiableTwin.run` equals ``AocTwin.run`` to
the loop tolerance (the same fixed point, to the same convergence test); given a ``tolerance``, every phase stops
at a relative change |F(z) − z| ≤ it (the largest at exit is ``exit_residual``);
:meth:`DifferentiableTwin.velocity` is the program's velocity at a state, (readout − y) / h of an open phase held
at y with step scale h.
"""

from __future__ import annotations

import numpy as np
import torch

from admc.ir.program import CLOSED, OPEN, SCALE_CLASSES, Phase, block_scale, phase_vectors
from admc.targets.aoc.chain import loop_gains
from admc.targets.aoc.differentiable_loop import PhaseLoop
from admc.targets.aoc.differentiable_optics import OpticsDelta
from admc.targets.aoc.fixed_point import (
    ADJOINT_TOLERANCE,
    iterative_adjoint,
    plain_fixed_point,
    relative_change,
    split_adjoint,
    split_fixed_point,
)
from admc.targets.aoc.physics import clip_injection
from admc.targets.aoc.twin import NOISE_FREE_TOLERANCE, AocTwin, all_off
from admc.targets.aoc.twin_phases import NOISE_FREE_MAX_ITERATIONS

SPLIT, PLAIN = "split", "plain"
SOLVERS = (SPLIT, PLAIN)


class DifferentiableTwin:
    """The twin of one bundle with the program's arrays as inputs (see the module docstring)."""

    def __init__(self, bundle, block_shapes: list[tuple[int, int]], nonidealities=None, *, calibration=None,
                 seed: int | None = None, tolerance: float = NOISE_FREE_TOLERANCE, quantise: bool = True,
                 solver: str = SPLIT, hold_full_scale: bool = False):
        """``solver``: how each phase's fixed point and adjoint are found: ``split`` (the loop without its
        relaxation, ``differentiable_loop``; the twin's own iteration where that does not converge) or ``plain``
        (the twin's own iteration and the adjoint iteration g ← v + Jᵀ g). ``hold_full_scale``: on a measured
        machine, no gradient for a pixel pushed past full scale (``differentiable_optics.saturated``)."""
        twin = AocTwin(bundle, nonidealities, calibration=calibration, seed=seed, operator="modules")
        noise_off = all_off(twin.nonidealities).read_noise
        twin.nonidealities = type(twin.nonidealities)(**{**vars(twin.nonidealities), "read_noise": noise_off})
        self.twin = twin
        self.delta = OpticsDelta(twin, block_shapes, quantise, hold_full_scale)
        self.tolerance = tolerance
        self.solver = solver
        self._unsplit: set[tuple] = set()  # (loop, step scale) of phases whose splitting did not contract
        self.iterations = 0  # loop applications of the last call's fixed points (forward)
        self.exit_residual = 0.0  # the last call's largest relative change |F(z) − z| where a phase stopped
        self.adjoint_iterations = 0  # steps of the adjoint solves since (backward)

    # -- the loop of one phase -----------------------------------------------------------------------
    def _matrices(self, flat_change: torch.Tensor, phase: Phase):
        """Per path, the gain-scaled module matrices [M, P_out, P_in] and the per-channel constant."""
        twin = self.twin
        factors = tuple(block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES)
        if twin.chain is None:
            gain = twin.beta * twin._tensor(factors)[twin.port_class]
            if twin.nonidealities.gain_error.enabled:
                gain = gain * twin.static_errors.gain_factor
            scaled = gain.unsqueeze(-1) * self.delta.optics(flat_change)
            return (scaled,), twin.loop_operator(phase).constant
        class_factor = np.asarray(factors)[twin.port_class.cpu().numpy()]
        matrices, constant = twin.chain.at(class_factor)
        factor, _ = loop_gains(twin.chain.settings * class_factor, twin.chain.measured, twin.chain.nominal,
                               twin.chain.nonidealities)
        change_positive, change_negative = self.delta.path_changes(flat_change)
        factor = twin._tensor(factor)[..., None]
        positive = twin._tensor(matrices.positive) + factor * change_positive
        negative = twin._tensor(matrices.negative) + factor * change_negative
        return (positive, negative), twin._per_channel(twin._tensor(constant))

    def _fixed_point(self, loop: PhaseLoop, state: torch.Tensor, key: tuple, where: str,
                     tolerance: float) -> torch.Tensor:
        """F(z*) of the phase's loop with the gradient of its fixed point z* (module docstring)."""
        start = loop.hold(state.detach())
        splits = self.solver == SPLIT and loop.splits() and key not in self._unsplit
        solved = split_fixed_point(loop.unrelaxed, start, tolerance) if splits else None
        if solved is None:
            if splits:
                self._unsplit.add(key)  # a phase's stability does not change with small weight changes
            splits = False
            solved = plain_fixed_point(loop.map, start, tolerance, NOISE_FREE_MAX_ITERATIONS, where)
        fixed, count = solved
        self.iterations += count
        result = loop.map(fixed)
        self.exit_residual = max(self.exit_residual, float(relative_change(result.detach(), fixed).max()))
        if result.requires_grad:
            linear = loop.linearisation(fixed) if splits else None

            def adjoint(gradient: torch.Tensor) -> torch.Tensor:
                solved = None if linear is None else split_adjoint(
                    lambda value, current: loop.adjoint_step(linear, value, current), gradient,
                    max(ADJOINT_TOLERANCE, tolerance))
                if solved is None:
                    solved = iterative_adjoint(loop.map, fixed, gradient, NOISE_FREE_MAX_ITERATIONS)
                self.adjoint_iterations += solved[1]
                return solved[0]

            result.register_hook(adjoint)
        return result

    def phase(self, phase: Phase, state, inject, hold, arrays, flat_change, time_index, where: str,
              tolerance: float | None = None):
        """(state after the phase, its readout) for one phase, with the gradient of its fixed point solved to
        ``tolerance`` (None: the twin's)."""
        twin = self.twin
        matrices, constant = self._matrices(flat_change, phase)
        drive = self._drive(phase, inject, hold, arrays, time_index) + constant
        closed = phase.loop == CLOSED
        loop = PhaseLoop(twin, matrices, drive, closed, hold)
        if not closed and not bool(torch.any(twin.open_alpha > 0)):
            for _ in range(twin.open_iterations):
                state = loop.update(state)
            self.iterations += twin.open_iterations
            return loop.hold(state), state[:, twin.readout] / twin.readout_scale
        fixed = self._fixed_point(loop, state, (phase.loop, phase.step_scale), where, tolerance or self.tolerance)
        readout = fixed if closed else loop.update(fixed)
        return fixed, readout[:, twin.readout] / twin.readout_scale

    def _drive(self, phase: Phase, inject, hold, arrays, time_index) -> torch.Tensor:
        """clip((1 − α)(static + injections) + cancellation), like ``AocTwin._drive``; ``time_index`` is the
        static table's row of the phase (an int, or per sample [B])."""
        twin = self.twin
        drive = sum(block_scale(name, phase.step_scale, phase.loop) * arrays.static[name][time_index]
                    for name in SCALE_CLASSES)
        drive = drive.expand(inject.shape[0], -1) if drive.dim() == 1 else drive
        columns = [drive]
        for (rows, _, kind), matrix in zip(twin.injections, arrays.injections, strict=True):
            source = inject if (kind == "inject" or phase.loop == CLOSED) else hold
            columns.append(torch.nn.functional.pad(source @ matrix.T, (rows.start, twin.size - rows.stop)))
        drive = (1.0 - twin.alpha) * sum(columns)
        if twin.chain is not None and twin.chain.cancellation is not None:
            class_factor = np.asarray(twin._phase_factors(phase))[twin.port_class.cpu().numpy()]
            drive = drive + twin._per_channel(twin._tensor(twin.chain.cancellation_at(class_factor)))
        return clip_injection(drive, twin.nonidealities)

    # -- runs ----------------------------------------------------------------------------------------
    def _time_index(self, time: float) -> int:
        return int(np.flatnonzero(self.twin.static_times == time)[0])

    def run(self, noise: torch.Tensor, arrays, flat_change: torch.Tensor, tolerance: float | None = None
            ) -> torch.Tensor:
        """The trajectory [T + 1, B, d] of the whole schedule from ``noise`` (like ``AocTwin.run``, no noise), each
        phase's fixed point solved to a relative change ≤ ``tolerance`` (None: the twin's own, what the equality
        with ``AocTwin.run`` holds for; training may ask for less, e.g. 1e-9, and saves iterations)."""
        twin = self.twin
        self.iterations = self.adjoint_iterations = 0
        self.exit_residual = 0.0
        x = noise
        state = noise.new_zeros(noise.shape[0], twin.size)
        for channels, scale in twin.initialised:
            state = torch.cat([state[:, :channels.start], scale * x, state[:, channels.stop:]], dim=1)
        trajectory = [x]
        for step, phases in enumerate(twin.schedule.steps):
            outputs = {"x": x}
            for index, phase in enumerate(phases):
                inject, hold, initial = phase_vectors(phase, outputs)
                if initial is not None:
                    for channels, scale in twin.initialised:
                        state = torch.cat([state[:, :channels.start], scale * initial, state[:, channels.stop:]],
                                          dim=1)
                state, outputs[f"phase:{index}"] = self.phase(phase, state, inject, hold, arrays, flat_change,
                                                              self._time_index(phase.time),
                                                              f"step {step}, phase {index}", tolerance)
            x = outputs[f"phase:{len(phases) - 1}"]
            trajectory.append(x)
        return torch.stack(trajectory)

    def velocity(self, y: torch.Tensor, time_index: torch.Tensor, step_scale: float, arrays,
                 flat_change: torch.Tensor, tolerance: float | None = None) -> torch.Tensor:
        """f̂(y, t) = (readout − y) / h of an open phase held and injected at y, t the static table's
        ``time_index`` per sample, h = ``step_scale``."""
        twin = self.twin
        self.iterations = self.adjoint_iterations = 0
        self.exit_residual = 0.0
        phase = Phase(OPEN, step_scale, float("nan"), (("x", 1.0),), (("x", 1.0),))
        state = y.new_zeros(y.shape[0], twin.size)
        for channels, scale in twin.initialised:
            state = torch.cat([state[:, :channels.start], scale * y, state[:, channels.stop:]], dim=1)
        _, readout = self.phase(phase, state, y, y, arrays, flat_change, time_index, "velocity phase", tolerance)
        return (readout - y) / step_scale
