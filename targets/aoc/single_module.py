"""One dense AOC module's loop, batched in torch: the relaxed operator, one discrete iteration, and the
continuous-time solve with the paper's acquisition (the physics of ``physics.py`` on a single module).

Requires: torch tensors of one floating dtype; a state [..., E, P] with transmissions [E, P, P] (E weight sets
programmed on the same module, e.g. calibration experiments), or [..., P] with transmissions [P, P].
Guarantees:
  * with every non-ideality disabled, :func:`loop_iteration` is exactly ``alpha z + beta (T+ - T-) tanh(z) + v``;
  * the loop is z' = sat(alpha z + beta (1 + gain_error) g(sigma(z)) + offsets + clip(v) + noise), and in
    continuous time tau dz/dt = -z + (the same right-hand side), tau = 1 / (2 pi f_3dB), integrated by
    exponential Euler (exact for the -z relaxation under a forcing held over the sub-step);
  * saturation clamps the state at every iteration (the integrator's output stage cannot leave its rails);
  * randomness comes only from the ``torch.Generator`` passed in: read noise without one is an ``AdmcError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from admc.core.errors import AdmcError
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.physics import activation, apply_saturation, clip_injection, optical_outputs
from admc.targets.aoc.static_errors import StaticErrors

Scalar = float | torch.Tensor


def _as_experiments(state: torch.Tensor, transmission: torch.Tensor) -> tuple[torch.Tensor, bool]:
    # A single [P_out, P_in] matrix is one experiment; give the state an experiment axis to match.
    if transmission.ndim == 2:
        return state.unsqueeze(-2), True
    return state, False


def relaxed_operator(
    state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    module: int = 0,
) -> torch.Tensor:
    """Noise-free F(z) = alpha z + beta (1 + gain_error) g(sigma(z)) + offsets + clip(v), one dense module.

    ``state`` is [..., E, P] with transmissions [E, P, P] (E weight sets programmed on the same module, e.g.
    calibration experiments), or [..., P] with transmissions [P, P]. alpha, beta broadcast to [E, P].
    """
    state, squeeze = _as_experiments(state, transmission_positive)
    positive = transmission_positive if not squeeze else transmission_positive.unsqueeze(0)
    negative = transmission_negative if not squeeze else transmission_negative.unsqueeze(0)
    experiments, ports = state.shape[-2:]
    errors = static_errors.module(module)
    drive = activation(state, nonidealities).reshape(-1, experiments, ports)
    optical = optical_outputs(drive, positive, negative, nonidealities, errors).reshape(state.shape)
    if nonidealities.gain_error.enabled:
        optical = optical * errors.gain_factor[0, :ports]
    injected = torch.as_tensor(injection, dtype=state.dtype)
    if squeeze and injected.ndim > 0:
        injected = injected.unsqueeze(-2)
    result = alpha * state + beta * optical + clip_injection(injected, nonidealities)
    if nonidealities.offsets.enabled:
        result = result + errors.offsets[0, :ports]
    return result.squeeze(-2) if squeeze else result


def _read_noise(
    like: torch.Tensor, nonidealities: NonIdealities, generator: torch.Generator | None
) -> torch.Tensor:
    if generator is None:
        raise AdmcError("read noise is enabled: pass a torch.Generator so the noise is reproducible")
    noise = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return nonidealities.read_noise.std * noise


def loop_iteration(
    state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    generator: torch.Generator | None = None,
    module: int = 0,
) -> torch.Tensor:
    """One discrete relaxed iteration z' = sat(F(z) + read noise) of a single dense module (shapes as
    :func:`relaxed_operator`); read noise is white, N(0, std^2) per channel and iteration."""
    update = relaxed_operator(
        state, transmission_positive, transmission_negative, alpha, beta, injection,
        nonidealities, static_errors, module,
    )
    if nonidealities.read_noise.enabled:
        update = update + _read_noise(update, nonidealities, generator)
    return apply_saturation(update, nonidealities)


@dataclass(frozen=True)
class Acquisition:
    """Timing of one analog solve and its readout (paper: 5 MHz bandwidth, 90 samples at 4.6875 MHz,
    readout averaged over 68-93 % of the solve and over 5 repeats)."""

    bandwidth_hz: float = 5e6
    sample_rate_hz: float = 4.6875e6
    samples: int = 90
    window: tuple[float, float] = (0.68, 0.93)
    repeats: int = 5
    substeps_per_sample: int | None = None  # default: sub-step no longer than tau / 2

    @property
    def time_constant(self) -> float:
        return 1.0 / (2.0 * math.pi * self.bandwidth_hz)

    def window_sample_indices(self) -> list[int]:
        """1-based indices s of the samples at time s / f_s that fall inside the readout window."""
        start, stop = self.window
        return [s for s in range(1, self.samples + 1) if start * self.samples <= s <= stop * self.samples]

    def substeps(self) -> int:
        if self.substeps_per_sample is not None:
            return self.substeps_per_sample
        return math.ceil((1.0 / self.sample_rate_hz) / (self.time_constant / 2.0))


def continuous_time_solve(
    initial_state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    generator: torch.Generator | None = None,
    acquisition: Acquisition | None = None,
    module: int = 0,
) -> torch.Tensor:
    """Integrate tau dz/dt = -z + F(z) + n(t) and return the windowed, repeat-averaged readout.

    Exponential Euler with a fixed sub-step: exact for the -z relaxation under a forcing held over the
    sub-step, and its fixed point is exactly F's. Read noise n(t) is white at the digitiser's sample rate:
    one N(0, std^2) value per channel held for each sample period, so the loop low-passes it as the analog
    integrator does. Saturation clamps the state after every sub-step. Shapes as :func:`relaxed_operator`;
    the result has the shape of ``initial_state``.
    """
    acquisition = acquisition or Acquisition()
    substeps = acquisition.substeps()
    step = (1.0 / acquisition.sample_rate_hz) / substeps
    decay = math.exp(-step / acquisition.time_constant)
    window = set(acquisition.window_sample_indices())
    if not window:
        raise AdmcError("continuous_time_solve: the readout window holds no sample")
    state = initial_state.unsqueeze(0).expand(acquisition.repeats, *initial_state.shape).clone()
    total = torch.zeros_like(state)
    for sample in range(1, acquisition.samples + 1):
        forcing_noise: torch.Tensor | float = 0.0
        if nonidealities.read_noise.enabled:
            forcing_noise = _read_noise(state, nonidealities, generator)
        for _ in range(substeps):
            target = relaxed_operator(
                state, transmission_positive, transmission_negative, alpha, beta, injection,
                nonidealities, static_errors, module,
            )
            state = apply_saturation(decay * state + (1.0 - decay) * (target + forcing_noise), nonidealities)
        if sample in window:
            total = total + state
    return (total / len(window)).mean(dim=0)
