"""One phase's noise-free loop of the differentiable twin as a map F(z), its relaxation-free splitting, and the
transposed Jacobian products its adjoint needs.

F is the bundle twin's noise-free iteration (``twin_phases.TwinPhases._operator``, then saturation; in an open
phase the held channels are set before and after). Every part of it but the optics is element-wise per channel:
F(z) = H(clip(r ⊙ (d + α ⊙ h(z) + L(h(z))))), L(z) = Σ_p A_p light_p(z), with A_p the path's optics, h and H the
holds, r the open phase's rescale and d the drive. Its Jacobian is J = diag(ρ) (diag α + N) diag(φ) with
N = Σ_p A_p diag(light_p′), ρ = H′ clip′ r per output channel and φ = h′ (0 on held channels).

Why a splitting: the relaxation α (up to ~0.8) is what makes the machine's loop slow (two moons: spectral radius
0.82 at the fixed point, all of it α), not the optics (0.08 without α). The unrelaxed map
G(z) = H(clip(r ⊙ (d + L(h(z))) / (1 − r α))) has exactly F's fixed points wherever r α < 1 (an unclipped
channel: z = r(d + α z + L) ⟺ z = r(d + L)/(1 − r α); a clipped one: r(d + α c + L) ≥ c ⟺ r(d + L)/(1 − r α) ≥ c
for the upper rail c, likewise the lower) and converges at the optics' own rate. The adjoint (I − J)ᵀ g = v splits
the same way: g ← (v + Nᵀ-part) / (1 − ρ α φ).

Requires: a ``DifferentiableTwin``'s bundle twin (layout, activations, effects) and the phase's module matrices per
path [M, P_out, P_in] and drive [B, n]. Guarantees: :meth:`PhaseLoop.update` is one application as the bundle twin
computes it (before an open phase re-holds: what it reads out); :meth:`PhaseLoop.map` re-holds (F);
:meth:`PhaseLoop.unrelaxed` is G (valid where :meth:`PhaseLoop.splits`: r α < 1); :meth:`PhaseLoop.adjoint_step`
is one step of the split adjoint at a linearisation. Small programs (n² ≤ ``DENSE_RATIO`` × the module entries)
sum the module optics into dense [n, n] matrices once per phase (one product per application instead of routing
every port; exact up to the order of the sums).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from admc.ir.adm import activate
from admc.targets.aoc.physics import activation

DENSE_RATIO = 4  # a dense product costs about a quarter of the routed module form's per entry


def dense_operator(twin, matrices: torch.Tensor) -> torch.Tensor:
    """The module matrices [M, P_out, P_in] routed into one channel matrix [n, n] (unused ports dropped)."""
    size = twin.size
    rows = twin.output_channel[:, :, None].expand(matrices.shape)
    columns = twin.input_channel[:, None, :].expand(matrices.shape)
    summed = matrices.new_zeros(size + 1, size + 1).index_put((rows, columns), matrices, accumulate=True)
    return summed[:size, :size]


def activate_state(twin, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each path's light for ``state`` [B, n], as the bundle twin's ``_activate`` (element-wise)."""
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


@dataclass
class Linearisation:
    """J at a fixed point, as the split adjoint uses it: ρ [B, n] per output channel, each path's light slope times
    φ [B, n], and 1 / (1 − ρ α φ) [B, n]."""

    rows: torch.Tensor
    slopes: tuple[torch.Tensor, ...]
    inverse_diagonal: torch.Tensor


class PhaseLoop:
    """The loop map of one phase (see the module docstring)."""

    def __init__(self, twin, matrices: tuple[torch.Tensor, ...], drive: torch.Tensor, closed: bool, hold):
        self.twin, self.drive, self.closed, self.hold_value = twin, drive, closed, hold
        self.dense = twin.size ** 2 <= DENSE_RATIO * matrices[0].numel()
        self.operators = tuple(dense_operator(twin, matrix) for matrix in matrices) if self.dense else matrices
        self.alpha = twin.alpha if closed else twin.open_alpha
        self.rescale = torch.ones(twin.size, dtype=drive.dtype, device=drive.device)
        self.free = torch.ones_like(self.rescale)
        if not closed:
            for channels, factor in twin.open_rescale:
                self.rescale[channels] = factor
            for channels, _ in twin.held:
                self.free[channels] = 0.0
        self.unrelaxed_gain = self.rescale / (1.0 - self.rescale * self.alpha)
        self.held_values = None  # [B, n]: the held channels' values, zero elsewhere (with the hold's graph)
        if not closed and twin.held:
            self.held_values = drive.new_zeros(hold.shape[0], twin.size)
            for channels, scale in twin.held:
                self.held_values[:, channels] = scale * hold

    def hold(self, state: torch.Tensor) -> torch.Tensor:
        """The held channels set to their values (z ⊙ φ + held: exact, one operation)."""
        if self.closed or not self.twin.held:
            return state
        return torch.addcmul(self.held_values, state, self.free)

    def _optics(self, state: torch.Tensor, lights=None, base: torch.Tensor | None = None) -> torch.Tensor:
        """base + L(z), L(z) = Σ_p A_p light_p(z)."""
        lights = activate_state(self.twin, state) if lights is None else lights
        total = base
        for operator, light in zip(self.operators, lights, strict=True):
            if self.dense:
                total = torch.addmm(total, light, operator.T) if total is not None else light @ operator.T
            else:
                total = self._routed(operator, light) if total is None else total + self._routed(operator, light)
        return total

    def _routed(self, operator: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """A light per sample in the module form: each module's LEDs gathered, its detectors scattered."""
        return self._through_modules(operator, light, self.twin.input_channel, self.twin.output_channel,
                                     "bmq,mpq->bmp")

    def _routed_transpose(self, operator: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Aᵀ value per sample in the module form: each module's rows gathered, its columns scattered."""
        return self._through_modules(operator, value, self.twin.output_channel, self.twin.input_channel,
                                     "bmp,mpq->bmq")

    def _through_modules(self, operator: torch.Tensor, value: torch.Tensor, gathered: torch.Tensor,
                         scattered: torch.Tensor, pattern: str) -> torch.Tensor:
        batch, modules = value.shape[0], operator.shape[0]
        entries = torch.nn.functional.pad(value, (0, 1))[:, gathered.reshape(-1)]
        signal = torch.einsum(pattern, entries.view(batch, modules, -1), operator)
        summed = value.new_zeros(batch, self.twin.size + 1).index_add(1, scattered.reshape(-1),
                                                                      signal.reshape(batch, -1))
        return summed[:, :self.twin.size]

    def _saturate(self, result: torch.Tensor) -> torch.Tensor:
        settings = self.twin.nonidealities.saturation
        return result.clamp(settings.low, settings.high) if settings.enabled else result

    def update(self, state: torch.Tensor) -> torch.Tensor:
        """One application (held channels set first in an open phase), as the bundle twin's iteration."""
        state = self.hold(state)
        result = self._optics(state, base=torch.addcmul(self.drive, self.alpha, state))
        return self._saturate(result if self.closed else result * self.rescale)

    def map(self, state: torch.Tensor) -> torch.Tensor:
        """F(z): one application, the held channels set again (what the loop iterates and compares)."""
        return self.hold(self.update(state))

    def splits(self) -> bool:
        """Whether G has F's fixed points: r α < 1 on every channel."""
        return bool(torch.all(self.rescale * self.alpha < 1.0))

    def unrelaxed(self, state: torch.Tensor) -> torch.Tensor:
        """G(z) for a held ``state`` (the held channels already set; G's own output is): F's fixed points without
        the relaxation's slow contraction (module docstring)."""
        return self.hold(self._saturate(self.unrelaxed_gain * self._optics(state, base=self.drive)))

    def linearisation(self, fixed: torch.Tensor) -> Linearisation:
        """J at a fixed point ``fixed`` (held) in its factors (no graph). A channel at a rail there is clipped:
        an unclipped value lands exactly on a rail with probability zero."""
        with torch.enable_grad():  # element-wise: the gradient of each light's sum is its slope
            probe = fixed.detach().requires_grad_()
            lights = activate_state(self.twin, probe)
            slopes = [torch.autograd.grad(light.sum(), probe, retain_graph=index + 1 < len(lights))[0]
                      for index, light in enumerate(lights)]
        with torch.no_grad():
            rows = self.rescale * self.free
            settings = self.twin.nonidealities.saturation
            if settings.enabled:
                rows = rows * ((fixed > settings.low) & (fixed < settings.high)).to(fixed.dtype)
            rows = rows.expand_as(fixed)
            return Linearisation(rows, tuple(slope * self.free for slope in slopes),
                                 1.0 / (1.0 - rows * self.alpha * self.free))

    def adjoint_step(self, linear: Linearisation, gradient: torch.Tensor, solution: torch.Tensor) -> torch.Tensor:
        """One split step of (I − J)ᵀ g = v: g ← (v + φ ⊙ Nᵀ(ρ ⊙ g)) / (1 − ρ α φ)."""
        weighted = linear.rows * solution
        total = gradient
        for operator, slope in zip(self.operators, linear.slopes, strict=True):
            operator = operator.detach()
            product = weighted @ operator if self.dense else self._routed_transpose(operator, weighted)
            total = torch.addcmul(total, slope, product)
        return total * linear.inverse_diagonal
