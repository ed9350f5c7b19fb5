"""How the AOC twin runs one phase: the per-iteration right-hand side, and the loop in discrete or continuous
time until it settles (``twin.py`` sets up the arrays these read; docs/design.md §6).

Requires: a class that mixes ``TwinPhases`` in and has set, before a phase runs, the twin's arrays (``alpha``,
``open_alpha``, ``open_rescale``, ``sigma_gain``, ``tanh_channels``, ``all_tanh``, ``program_sigmoids``, ``held``,
``readout``, ``readout_scale``), its settings (``nonidealities``, ``chain``, ``loop_iterations``,
``open_iterations``, ``repeats``, ``window``, ``time_constant``, ``sample_period``, ``tolerance``, ``seed``,
``device``, ``dtype``, ``record_residuals``, ``product_threads``: the thread count of the operator's products
while the rest runs on ``twin_threads.ELEMENTWISE_THREADS``), ``loop_operator(phase)``, a ``_buffers`` dict and
the run's ``_history`` list.
Guarantees: one iteration computes F(z) = α z + S σ(σ-gain z) + drive with held channels unrelaxed in open phases,
then read noise and saturation. Discrete mode iterates a noise-free closed phase to convergence (or refuses
after ``NOISE_FREE_MAX_ITERATIONS``), a noisy one for the loop budget, and reads out the average over the
readout window; continuous mode integrates τ dz/dt = −z + F(z) + noise by exponential Euler at τ/2 sub-steps
with noise held per sample period. Divergence, a noise-free loop that does not settle, and a noisy one still
drifting beyond what its read noise explains raise ``ConvergenceError`` naming the step, phase and residual.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from admc.core.errors import ConvergenceError
from admc.ir.adm import activate
from admc.ir.program import CLOSED, Phase
from admc.targets.aoc.loop_operator import LoopOperator
from admc.targets.aoc.physics import activation, activation_
from admc.targets.aoc.twin_threads import threads

SETTLE_TOLERANCE = 2e-2  # relative drift of the windowed readout between the window's two halves
NOISE_FREE_MAX_ITERATIONS = 100_000
DIVERGENCE_RESIDUAL = 1e12
# A settled noisy loop changes per iteration by a few read-noise standard deviations; a loop still changing by
# more than this many at the end of its budget (e.g. oscillating between the rails) has not settled.
UNSETTLED_NOISE_MULTIPLE = 40.0

PhaseOutcome = tuple[torch.Tensor, torch.Tensor, int, float]  # final state, readout, iterations, settle


class TwinPhases:
    """The phase loops of ``AocTwin`` (see the module docstring for what the twin must provide)."""

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A reusable work tensor shaped like ``like`` (large allocations cost page faults every iteration)."""
        key = (name, tuple(like.shape), like.dtype, like.device)
        if key not in self._buffers:
            if len(self._buffers) > 16:  # batch shapes changed: drop the old ones
                self._buffers.clear()
            self._buffers[key] = torch.empty_like(like)
        return self._buffers[key]

    def _activate(self, state: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """σ(σ-gain · z) on tanh channels, σ-gain · z on the others; the result lives in a work buffer that
        the next call overwrites. Measured chain: each path's LED light P±(S(z)) at the machine's own input
        gain (the program's σ gain is what the compiler assumed; the machine has only a)."""
        if self.chain is not None:
            light = self.chain.light(state)
            return light["positive"], light["negative"]
        scaled = torch.mul(state, self.sigma_gain, out=self._buffer("activated", state))
        if self.program_sigmoids and not self.nonidealities.nonlinearity.enabled:
            activated = torch.where(self.tanh_channels, torch.tanh(scaled), scaled)
            for channels, name in self.program_sigmoids:
                activated[:, channels] = activate(name, scaled[:, channels])
            return activated
        if not self.all_tanh:
            return torch.where(self.tanh_channels, activation(scaled, self.nonidealities), scaled)
        return activation_(scaled, self.nonidealities, self._buffer("activation work", state))

    def _operator(self, state: torch.Tensor, operator: LoopOperator, drive: torch.Tensor, closed: bool,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-free right-hand side F(z) = α z + S σ(σ-gain z) + drive of one iteration (held channels
        unrelaxed in open phases); written into ``out`` when given (it must not alias ``state``)."""
        activated = self._activate(state)
        alpha = self.alpha if closed else self.open_alpha
        result = torch.addcmul(drive, alpha, state) if out is None else torch.addcmul(drive, alpha, state, out=out)
        with threads(self.product_threads):  # the run's element-wise work is on one thread (twin_threads.py)
            result = operator.accumulate(activated, result)
        if not closed:
            for channels, factor in self.open_rescale:
                result[:, channels] *= factor
        return result

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor | float:
        """White read noise N(0, std²) for one iteration (drawn in float32), or 0.0 when it is off."""
        if not self.noisy:
            return 0.0
        sample = torch.randn(shape, generator=generator, dtype=torch.float32, device=self.device)
        return sample.mul_(self.nonidealities.read_noise.std).to(self.dtype)

    def _add_noise(self, target: torch.Tensor, buffer: torch.Tensor | None,
                   generator: torch.Generator) -> torch.Tensor:
        """target += read noise, drawn into the float32 ``buffer``; the same draws as :meth:`_noise`."""
        if self.noisy and buffer is not None:
            buffer.normal_(generator=generator)
            target.add_(buffer, alpha=self.nonidealities.read_noise.std)
        return target

    def _saturate(self, state: torch.Tensor) -> torch.Tensor:
        """``apply_saturation`` in place."""
        settings = self.nonidealities.saturation
        return state.clamp_(settings.low, settings.high) if settings.enabled else state

    @property
    def noisy(self) -> bool:
        return self.nonidealities.read_noise.enabled

    # -- phases ----------------------------------------------------------------------------------
    def _hold(self, state: torch.Tensor, hold: torch.Tensor | None) -> torch.Tensor:
        for channels, scale in self.held:
            state[:, channels] = scale * hold
        return state

    def _window(self, count: int) -> range:
        start = min(int(np.floor(self.window[0] * count)), count - 1)
        stop = max(int(np.ceil(self.window[1] * count)), start + 1)
        return range(start, min(stop, count))

    def _budget(self, closed: bool, exact_open: bool) -> int:
        budget = self.open_iterations if (exact_open and not self.noisy) else self.loop_iterations
        if not self.noisy and not exact_open:
            budget = max(budget, NOISE_FREE_MAX_ITERATIONS)  # a noise-free run is taken to convergence
        if exact_open and self.noisy:
            budget = max(self.loop_iterations // 4, self.open_iterations)
        return budget

    def _readout(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, self.readout] / self.readout_scale

    @staticmethod
    def _change(updated: torch.Tensor, state: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
        """Per batch row max |updated − state| / max(1, max |updated|) (NaN or inf when not finite)."""
        scale = torch.abs(updated, out=scratch).amax(dim=1).clamp_min_(1.0)
        return torch.sub(updated, state, out=scratch).abs_().amax(dim=1).div_(scale)

    def _iterate(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                 hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        operator = self.loop_operator(phase)
        closed = phase.loop == CLOSED
        exact_open = not closed and not bool(torch.any(self.open_alpha > 0))
        budget = self._budget(closed, exact_open)
        window = self._window(budget)
        readouts, history = [], []
        residual = float("inf")
        state = state.clone()
        spare, scratch = torch.empty_like(state), torch.empty_like(state)
        noise = torch.empty(state.shape, dtype=torch.float32, device=self.device) if self.noisy else None
        for count in range(1, budget + 1):
            if not closed:
                state = self._hold(state, hold)
            updated = self._operator(state, operator, drive, closed, out=spare)
            updated = self._saturate(self._add_noise(updated, noise, generator))
            readout = self._readout(updated)  # before an open phase re-holds the held channels
            if not closed:
                updated = self._hold(updated, hold)  # the next iteration holds them anyway: compare like with like
            change = self._change(updated, state, scratch)
            residual = float(change.max()) if change.numel() else 0.0
            if not math.isfinite(residual) or residual > DIVERGENCE_RESIDUAL:
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged after "
                                       f"{count} iterations (relative change {residual:.3e})")
            if self.record_residuals and step == 0 and closed:
                history.append(change.cpu().numpy())
            spare, state = state, updated
            if count - 1 in window:
                readouts.append(readout)
            if not self.noisy and (closed and residual <= self.tolerance or not closed and (
                    count >= self.open_iterations and (exact_open or residual <= self.tolerance))):
                readouts = [readout]
                break
        else:
            if not self.noisy and closed:
                raise ConvergenceError(f"twin: step {step}, phase {index} (closed loop) not settled after "
                                       f"{budget} iterations (relative change {residual:.3e})")
            limit = max(SETTLE_TOLERANCE, UNSETTLED_NOISE_MULTIPLE * self.nonidealities.read_noise.std)
            if self.noisy and residual > limit:
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle within "
                                       f"{budget} iterations: still changing by {residual:.3e} (relative) per "
                                       f"iteration, beyond read noise (oscillating?)")
        if history:
            self._history.append(np.stack(history))
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle within "
                                   f"{budget} iterations: the windowed readout drifts by {settle:.3e} (relative)")
        return state, torch.stack(readouts).mean(dim=0), count, settle

    def _settle_residual(self, readouts: list[torch.Tensor]) -> float:
        """Drift of the repeat-averaged windowed readout between the window's halves, beyond what read noise
        explains.

        The noise allowance is six standard errors of that drift. The window's samples are not independent
        (α low-pass filters the noise: with α = 0.9 its correlation time is ~10 iterations), so their own
        spread understates the error of a half-window mean; the repeats are independent realisations, so
        the spread of the drift across repeats (pooled over the batch, per channel) measures it. A loop that
        has not settled drifts alike in every repeat and is still caught. The within-window estimate (as if
        the samples were independent) is kept as a floor, and is all there is with one repeat.
        """
        if len(readouts) < 4:
            return 0.0
        samples = torch.stack(readouts)  # [window, repeats · batch, d]
        half = len(readouts) // 2
        first, second = samples[:half].mean(0), samples[half:].mean(0)
        repeats = self.repeats
        per_repeat = (second - first).reshape(repeats, -1, samples.shape[-1])
        drift = per_repeat.mean(0)
        within = (6.0 * samples.std(dim=0) / np.sqrt(half)).reshape(repeats, -1, samples.shape[-1])
        allowance = within.pow(2).mean(0).sqrt() / np.sqrt(repeats)
        if repeats > 1:
            pooled = per_repeat.var(dim=0).mean(dim=0, keepdim=True)  # [1, d]
            allowance = torch.maximum(allowance, 6.0 * (pooled / repeats).sqrt())
        excess = (drift.abs() - allowance).clamp_min(0.0)
        scale = second.reshape(repeats, -1, samples.shape[-1]).mean(0).abs().amax(dim=1, keepdim=True)
        return float((excess / scale.clamp_min(1.0)).max())

    def _continuous(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                    hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        """τ dz/dt = −z + F(z) + n(t): exponential Euler at τ/2 sub-steps; noise held per sample period."""
        operator = self.loop_operator(phase)
        closed = phase.loop == CLOSED
        duration = self.loop_iterations * self.time_constant
        substep = self.time_constant / 2
        count = int(np.ceil(duration / substep))
        decay = float(np.exp(-substep / self.time_constant))
        samples_per_period = max(1, int(round(self.sample_period / substep)))
        readouts = []
        noise = self._noise(state.shape, generator)
        window = self._window(count)
        state = state.clone()
        for index_substep in range(count):
            if not closed:
                state = self._hold(state, hold)
            if index_substep % samples_per_period == 0:
                noise = self._noise(state.shape, generator)
                if index_substep in window or (index_substep + samples_per_period - 1) in window:
                    readouts.append(self._readout(state))
            target = self._operator(state, operator, drive, closed).add_(noise)
            state = self._saturate(target.add_(state.sub_(target), alpha=decay))  # target + decay (z − target)
            if not torch.isfinite(state).all():
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged in "
                                       f"continuous time after {index_substep + 1} sub-steps")
        readouts.append(self._readout(state))
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle in "
                                   f"{duration * 1e6:.2f} µs: the windowed readout drifts by {settle:.3e}")
        return state, torch.stack(readouts).mean(dim=0), count, settle
