"""The AOC bundle twin, differentiable in the program's arrays: what fine-tuning trains through.

The loop is the bundle twin's (``twin.py``): its arrays, static errors, measured chain, phases, held and
relaxed channels, injection clip and readout, read from the same ``AocTwin``; only the program's weights, static
injections and injection matrices are torch values here (``admc.finetune.program_torch``), moved into the optics
by ``differentiable_optics``. Read noise is left out: it is zero-mean, the readout averages it, and the fixed
point of each phase carries what fine-tuning can correct (static errors, the σ·LED shape, quantisation).

Differentiation: implicit, at each phase's fixed point. A noise-free closed phase runs to the twin's own
convergence (relative change ≤ its tolerance) without a graph; one more application F(z*) carries the graph,
and its gradient is completed by iterating the adjoint g ← v + (∂F/∂z)ᵀ g, which converges at the loop's own
contraction rate. Why: the loop runs hundreds of iterations per phase; backpropagating through all of them
stores every one and costs as much again per iteration, while the fixed point's gradient needs only the last
application, and it is exact at the fixed point the twin reads out (the machine's answer), not an artefact of
a truncated run. Open phases whose loop is exact after ``open_iterations`` (α = 0 off the held channels) are
unrolled instead.

Requires: an AOC bundle with one image set, and arrays shaped as its program. Guarantees: with the arrays of
the compiled program (ΔW = 0), no noise and float64, :meth:`DifferentiableTwin.run` equals ``AocTwin.run`` to
the loop tolerance (the same iteration, to the same convergence); :meth:`DifferentiableTwin.velocity` is the
program's velocity at a state, (readout − y) / h of an open phase held at y with step scale h.
"""

from __future__ import annotations

import numpy as np
import torch

from admc.core.errors import ConvergenceError
from admc.ir.adm import activate
from admc.ir.program import CLOSED, OPEN, SCALE_CLASSES, Phase, block_scale, phase_vectors
from admc.targets.aoc.chain import loop_gains
from admc.targets.aoc.differentiable_optics import OpticsDelta
from admc.targets.aoc.physics import activation, clip_injection
from admc.targets.aoc.twin import NOISE_FREE_TOLERANCE, AocTwin, all_off
from admc.targets.aoc.twin_phases import NOISE_FREE_MAX_ITERATIONS

ADJOINT_TOLERANCE = 1e-10


class DifferentiableTwin:
    """The twin of one bundle with the program's arrays as inputs (see the module docstring)."""

    def __init__(self, bundle, block_shapes: list[tuple[int, int]], nonidealities=None, *, calibration=None,
                 seed: int | None = None, tolerance: float = NOISE_FREE_TOLERANCE, quantise: bool = True):
        twin = AocTwin(bundle, nonidealities, calibration=calibration, seed=seed, operator="modules")
        noise_off = all_off(twin.nonidealities).read_noise
        twin.nonidealities = type(twin.nonidealities)(**{**vars(twin.nonidealities), "read_noise": noise_off})
        self.twin = twin
        self.delta = OpticsDelta(twin, block_shapes, quantise)
        self.tolerance = tolerance
        self.iterations = 0  # loop iterations of the last call (forward; the adjoint runs as many again)

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

    def _accumulate(self, matrices: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
        twin = self.twin
        batch = activated.shape[0]
        modules, _, inputs = matrices.shape
        led = torch.nn.functional.pad(activated, (0, 1))[:, twin.input_channel.reshape(-1)]
        signal = torch.einsum("bmq,mpq->bmp", led.view(batch, modules, inputs), matrices)
        summed = activated.new_zeros(batch, twin.size + 1).index_add(1, twin.output_channel.reshape(-1),
                                                                      signal.reshape(batch, -1))
        return summed[:, :twin.size]

    def _activate(self, state: torch.Tensor):
        twin = self.twin
        if twin.chain is not None:
            light = twin.chain.light(state)
            return light["positive"], light["negative"]
        scaled = state * twin.sigma_gain
        if twin.program_sigmoids and not twin.nonidealities.nonlinearity.enabled:
            activated = torch.where(twin.tanh_channels, torch.tanh(scaled), scaled).clone()
            for channels, name in twin.program_sigmoids:
                activated[:, channels] = activate(name, scaled[:, channels])
            return (activated,)
        if not twin.all_tanh:
            return (torch.where(twin.tanh_channels, activation(scaled, twin.nonidealities), scaled),)
        return (activation(scaled, twin.nonidealities),)

    def _apply(self, state, matrices, drive, closed: bool, hold) -> torch.Tensor:
        """One noise-free iteration F(z) (held channels set first in an open phase), like ``TwinPhases``."""
        twin = self.twin
        if not closed:
            state = self._hold(state, hold)
        result = drive + (twin.alpha if closed else twin.open_alpha) * state
        for matrix, light in zip(matrices, self._activate(state), strict=True):
            result = result + self._accumulate(matrix, light)
        if not closed:
            for channels, factor in twin.open_rescale:
                result = torch.cat([result[:, :channels.start], result[:, channels] * factor,
                                    result[:, channels.stop:]], dim=1)
        return twin._saturate(result.clone()) if twin.nonidealities.saturation.enabled else result

    def _hold(self, state: torch.Tensor, hold) -> torch.Tensor:
        state = state.clone()
        for channels, scale in self.twin.held:
            state[:, channels] = scale * hold
        return state

    def _settle(self, function, state: torch.Tensor, where: str) -> torch.Tensor:
        """The fixed point of ``function`` from ``state`` without a graph, as the noise-free twin stops."""
        with torch.no_grad():
            for count in range(1, NOISE_FREE_MAX_ITERATIONS + 1):
                updated = function(state)
                scale = updated.abs().amax(dim=1).clamp_min(1.0)
                change = float(((updated - state).abs().amax(dim=1) / scale).max()) if updated.numel() else 0.0
                state = updated
                if not np.isfinite(change):
                    raise ConvergenceError(f"fine-tuning twin: {where} diverged after {count} iterations")
                if change <= self.tolerance:
                    self.iterations += count
                    return state
        raise ConvergenceError(f"fine-tuning twin: {where} not settled after {NOISE_FREE_MAX_ITERATIONS} "
                               f"iterations (relative change {change:.3e})")

    def _implicit(self, function, fixed: torch.Tensor) -> torch.Tensor:
        """function(z*) with the gradient of the fixed point z* = function(z*) (the module docstring)."""
        result = function(fixed.detach())
        if not result.requires_grad:
            return result
        probe = fixed.detach().requires_grad_()
        with torch.enable_grad():
            applied = function(probe)

        def adjoint(gradient: torch.Tensor) -> torch.Tensor:
            solution = gradient
            for _ in range(NOISE_FREE_MAX_ITERATIONS):
                step = torch.autograd.grad(applied, probe, solution, retain_graph=True)[0] + gradient
                done = float((step - solution).abs().max()) <= ADJOINT_TOLERANCE * max(1.0, float(step.abs().max()))
                solution = step
                if done:
                    break
            return solution

        result.register_hook(adjoint)
        return result

    def phase(self, phase: Phase, state, inject, hold, arrays, flat_change, time_index, where: str):
        """(state after the phase, its readout) for one phase, with the gradient of its fixed point."""
        twin = self.twin
        matrices, constant = self._matrices(flat_change, phase)
        drive = self._drive(phase, inject, hold, arrays, time_index) + constant
        closed = phase.loop == CLOSED
        if not closed and not bool(torch.any(twin.open_alpha > 0)):
            for _ in range(twin.open_iterations):
                state = self._apply(state, matrices, drive, closed, hold)
            self.iterations += twin.open_iterations
            return self._hold(state, hold), state[:, twin.readout] / twin.readout_scale

        def function(value):
            updated = self._apply(value, matrices, drive, closed, hold)
            return updated if closed else self._hold(updated, hold)

        fixed = self._implicit(function, self._settle(function, state, where))
        readout = fixed if closed else self._apply(fixed, matrices, drive, closed, hold)
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

    def run(self, noise: torch.Tensor, arrays, flat_change: torch.Tensor) -> torch.Tensor:
        """The trajectory [T + 1, B, d] of the whole schedule from ``noise`` (like ``AocTwin.run``, no noise)."""
        twin = self.twin
        self.iterations = 0
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
                                                              f"step {step}, phase {index}")
            x = outputs[f"phase:{len(phases) - 1}"]
            trajectory.append(x)
        return torch.stack(trajectory)

    def velocity(self, y: torch.Tensor, time_index: torch.Tensor, step_scale: float, arrays,
                 flat_change: torch.Tensor) -> torch.Tensor:
        """f̂(y, t) = (readout − y) / h of an open phase held and injected at y, t the static table's
        ``time_index`` per sample, h = ``step_scale``."""
        twin = self.twin
        self.iterations = 0
        phase = Phase(OPEN, step_scale, float("nan"), (("x", 1.0),), (("x", 1.0),))
        state = y.new_zeros(y.shape[0], twin.size)
        for channels, scale in twin.initialised:
            state = torch.cat([state[:, :channels.start], scale * y, state[:, channels.stop:]], dim=1)
        _, readout = self.phase(phase, state, y, y, arrays, flat_change, time_index, "velocity phase")
        return (readout - y) / step_scale
