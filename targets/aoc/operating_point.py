"""Fit each channel's measured σ → light curve to the program's σ over the range the channel is driven.

The program's σ is tanh, or, for a model trained with the machine's own algebraic sigmoid, that sigmoid: the
makers' generalised sigmoid matches it closer (rms 0.007 against 0.015 for tanh on hw48, small test networks).

The measured machine's light per channel is P±(S(z)) (the makers' sigmoid S at its fixed input gain and each
path's LED cubic), not tanh: it is more linear near zero, saturates harder and asymmetrically (the LED's even
term and the sigmoid's offsets put the positive swing about 10 % below the negative one on hw48). Linearised
at z = 0 that leaves about 7 % rms error per channel against tanh. Over the voltages a channel actually sees,
a better affine match exists: per channel an operating-point shift δ (volts added to the state, hidden
channels only: a state or read-out channel's voltage is the answer) and per path a light scale and a rest
light, light± ≈ rest± + scale± · tanh(σ-gain · z) for z + δ on the machine.

Requires: the program as the machine runs it (voltage-scaled, ``scale_states``), its schedule and α, and the
machine's ``MeasuredChain``. Guarantees: :func:`record_states` returns, per channel, seeded samples of the state
voltages the ideal program drives σ with (every loop iteration, ideal execution); :func:`fit_operating_points`
returns the least-squares (δ, scale±, rest±) per channel and the rms error of the affine match before (at
z = 0, the small-signal model) and after, relative to the rms tanh — the fit never makes a channel worse, since
the small-signal model is one of the candidates it compares against. Channels without tanh keep the
small-signal model (the machine's curve is not theirs to match).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from admc.ir.adm import TANH, activate
from admc.runtime.executor import IdealExecutor, float32_products_for, samples_within_work
from admc.targets.aoc.chain import MeasuredChain, led_light, sigmoid_output
from admc.targets.aoc.nonidealities import NonIdealities

PATHS = ("positive", "negative")
RECORD_SAMPLES = 64
# As the state-scaling calibration run (passes/state_scaling.py): 64 samples up to 65,536 weights, fewer above.
RECORD_WORK = RECORD_SAMPLES << 16
RECORD_MIN_SAMPLES = 16
RECORD_SEED = 0
SAMPLES_PER_CHANNEL = 2048
RECORD_TOLERANCE = 1e-6
# Shift search: the machine's asymmetry needs at most a few tenths of a unit of tanh argument.
SHIFT_RANGE_SIGMA = 0.4  # in units of the tanh argument (σ-gain × volts)
COARSE_POINTS = 41
FINE_POINTS = 21


def machine_light(volts: np.ndarray, chain: MeasuredChain) -> dict[str, np.ndarray]:
    """Raw LED light of each path for state voltages ``volts`` (the chain's own S and P±, every curve on)."""
    import torch  # the machine's curves are torch functions; a build without a measured chain never needs it

    effects = NonIdealities()
    effects = replace(effects, nonlinearity=replace(effects.nonlinearity, enabled=True),
                      sigmoid_offsets=replace(effects.sigmoid_offsets, enabled=True),
                      led_response=replace(effects.led_response, enabled=True))
    state = torch.as_tensor(np.asarray(volts, dtype=np.float64))
    light = led_light(sigmoid_output(state, chain, effects), chain, None, effects)
    return {path: light[path].numpy() for path in PATHS}


class _Recorder(IdealExecutor):
    """The ideal executor, keeping a strided subsample of the states σ is applied to."""

    def __init__(self, *arguments, stride: int, **options):
        super().__init__(*arguments, **options)
        self.stride = stride
        self.states: list[np.ndarray] = []

    def _activated(self, state: np.ndarray) -> np.ndarray:
        self.states.append(state[len(self.states) % self.stride::self.stride].copy())
        return super()._activated(state)


def record_samples(program) -> int:
    """How many samples ``record_states`` runs for ``program`` (RECORD_WORK over its weight count, clipped)."""
    return samples_within_work(program, RECORD_WORK, RECORD_MIN_SAMPLES, RECORD_SAMPLES)


def record_states(program, schedule, alpha, samples: int = RECORD_SAMPLES, seed: int = RECORD_SEED,
                  extra_drive=None) -> np.ndarray:
    """[S, n] states σ reads during the ideal run of ``program`` on seeded noise (subsampled); ``extra_drive``:
    a conditional program's per-phase conditioning drive for those ``samples``."""
    noise = np.random.default_rng(seed).standard_normal((samples, program.state_dimension))
    recorder = _Recorder(program, alpha, tolerance=RECORD_TOLERANCE, stride=8,
                         float32_products=float32_products_for(program, RECORD_TOLERANCE))
    recorder.run(schedule, noise, extra_drive)
    states = np.concatenate(recorder.states)
    if states.shape[0] > SAMPLES_PER_CHANNEL:
        keep = np.sort(np.random.default_rng(seed).choice(states.shape[0], SAMPLES_PER_CHANNEL, replace=False))
        states = states[keep]
    return states


@dataclass(frozen=True)
class OperatingPoints:
    """Per channel: shift δ (volts), per path the light scale (raw light per unit tanh) and rest light."""

    shift: np.ndarray  # [n]
    scale: dict[str, np.ndarray]  # path -> [n]
    rest: dict[str, np.ndarray]  # path -> [n]
    error_before: np.ndarray  # [n] rms affine-match error / rms tanh, small-signal model
    error_after: np.ndarray  # [n] the same with the fitted model
    fitted: np.ndarray  # [n] bool: channels whose model was fitted


def small_signal_model(chain: MeasuredChain) -> tuple[dict[str, float], dict[str, float]]:
    """Light scale (raw light per unit of the tanh argument a·z) and rest light at z = 0, per path."""
    a = float(chain.sigmoid[0])
    step = 1e-6
    light = machine_light(np.array([-step, 0.0, step]), chain)
    return ({path: float(light[path][2] - light[path][0]) / (2 * step) / a for path in PATHS},
            {path: float(light[path][1]) for path in PATHS})


def _affine(light: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares light ≈ rest + scale·target along the last axis: (scale, rest, Σ residual²/scale²)."""
    mean_target, mean_light = target.mean(axis=-1, keepdims=True), light.mean(axis=-1, keepdims=True)
    centred = target - mean_target
    scale = ((light - mean_light) * centred).sum(axis=-1) / np.maximum((centred * centred).sum(axis=-1), 1e-300)
    rest = mean_light[..., 0] - scale * mean_target[..., 0]
    residual = light - rest[..., None] - scale[..., None] * target
    safe = np.where(np.abs(scale) > 1e-300, scale, 1.0)
    return scale, rest, (residual * residual).sum(axis=-1) / (safe * safe)


def fit_operating_points(states: np.ndarray, sigma_gain: np.ndarray, tanh_channels: np.ndarray,
                         shiftable: np.ndarray, chain: MeasuredChain,
                         activations: list[str] | None = None) -> OperatingPoints:
    """Least-squares operating point of every σ channel (``tanh_channels``) over its recorded voltages
    ``states`` [S, n].

    ``sigma_gain`` [n]: the program's σ gain (the σ the program computes is σ(gain·z)); ``activations`` [n]: each
    channel's σ by name (None: tanh everywhere; a model of the machine's own algebraic sigmoid asks for that);
    ``shiftable`` [n]: channels whose voltage may be offset (hidden channels)."""
    channels = states.shape[1]
    small_scale, small_rest = small_signal_model(chain)
    shift = np.zeros(channels)
    scale = {path: np.full(channels, small_scale[path]) for path in PATHS}
    rest = {path: np.full(channels, small_rest[path]) for path in PATHS}
    before, after = np.zeros(channels), np.zeros(channels)
    for channel in np.flatnonzero(tanh_channels):
        volts = states[:, channel]
        target = activate(TANH if activations is None else activations[channel], sigma_gain[channel] * volts)
        norm = max(float(np.sum(target * target)), 1e-300)
        light = machine_light(volts, chain)
        # Small-signal model: rest and scale at z = 0, each path.
        error = sum(float(np.sum(((light[path] - small_rest[path]) / small_scale[path] - target) ** 2))
                    for path in PATHS)
        before[channel] = after[channel] = np.sqrt(error / (2 * norm))
        half_width = SHIFT_RANGE_SIGMA / sigma_gain[channel]
        candidates = np.linspace(-half_width, half_width, COARSE_POINTS) if shiftable[channel] else np.zeros(1)
        for refine in range(2):
            shifted = machine_light(volts[None, :] + candidates[:, None], chain)
            fits = {path: _affine(shifted[path], target[None, :]) for path in PATHS}
            total = fits["positive"][2] + fits["negative"][2]
            best = int(np.argmin(total))
            if not shiftable[channel] or refine == 1:
                break
            spacing = candidates[1] - candidates[0]
            candidates = candidates[best] + np.linspace(-spacing, spacing, FINE_POINTS)
        fitted_error = np.sqrt(float(total[best]) / (2 * norm))
        if fitted_error < before[channel] and all(fits[path][0][best] > 0 for path in PATHS):
            shift[channel] = candidates[best]
            for path in PATHS:
                scale[path][channel], rest[path][channel] = fits[path][0][best], fits[path][1][best]
            after[channel] = fitted_error
    return OperatingPoints(shift, scale, rest, before, after, np.asarray(tanh_channels, dtype=bool))
