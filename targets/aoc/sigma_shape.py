"""Compensate the machine's declared σ shape at compile time (an uncalibrated AOC build).

The program computes tanh(u) per channel (u = σ-gain · z). A description whose ``nonidealities.nonlinearity``
is enabled declares that the machine drives its LEDs with the algebraic sigmoid s(u) = u / (1 + |u|^c)^(1/c)
instead (c: the calibrated exponent). s has tanh's unit slope at 0 but lies above it everywhere (s(1) = 0.85
against tanh(1) = 0.76): about 9 % rms error over the arguments a channel sees. Over those arguments a
per-channel output scale k brings k·s(u) to about 3 % of tanh(u). k is the least-squares scale over the
arguments the ideal program drives each channel with, and since |s| ≥ |tanh| with the same sign, k ≤ 1: it
folds into the SLM column the channel drives (transmission × k stays in [0, 1]), and each tile row is then
renormalised to the SLM's full range with its gain β lowered by the same factor (never below the tile's gain
floor), so the images keep their grey levels. The σ input gain is fixed on the machine (``sigma.gain_min`` =
``gain_max``); an input gain g realised as a hidden channel's voltage scale (row gain and injection × g) was
tried: k·s(g·u) lowers the rms σ error further (0.033 → 0.023 on the guided eight-Gaussians example) but moved
the twin's guided samples further from the program (mean 0.16 → 0.22). One g per hidden group (g ≤ 1, realised
as the group's voltage) was tried too: rms error 0.028, samples closer at W = 0 (mean 0.064 → 0.054) but
farther at W = 3 (0.163 → 0.195; ``examples/conditional/sigma_sensitivity.py``), so only k is applied.

Requires: the scaled program (volts, ``scale_states``), the state rails and the declared exponent.
Guarantees: :func:`declared_exponent` is None for a description without a σ shape (the build is then
unchanged); :func:`fit_output_scales` returns per channel k in (0, 1] (1 on channels that are not tanh or
never driven) and the rms error of s and of k·s against tanh relative to the rms tanh, over the recorded
arguments (the state clipped to the rails first, as the machine clamps it); the fitted error is never above
the uncompensated one (k = 1 is a candidate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A channel whose recorded arguments carry almost no signal keeps k = 1 (nothing to fit).
SIGNAL_FLOOR = 1e-12
# Never attenuate a column by more than this: a fit that wants more is not a σ-shape mismatch.
SCALE_FLOOR = 0.5
PAYLOAD = "aoc/sigma_compensation/output_scale.npy"


def declared_exponent(target) -> float | None:
    """The exponent c of the machine's σ shape if the description declares one (its nonlinearity effect)."""
    nonlinearity = getattr(getattr(target, "nonidealities", None), "nonlinearity", None)
    if nonlinearity is None or not nonlinearity.enabled:
        return None
    return float(nonlinearity.exponent)


def algebraic_sigmoid(argument: np.ndarray, exponent: float) -> np.ndarray:
    """s(u) = u / (1 + |u|^c)^(1/c), the machine's σ at unit input gain (float64)."""
    argument = np.asarray(argument, dtype=np.float64)
    return argument / (1.0 + np.abs(argument) ** exponent) ** (1.0 / exponent)


@dataclass(frozen=True)
class OutputScales:
    scale: np.ndarray  # [n] k per state channel
    error_before: np.ndarray  # [n] rms(s − tanh) / rms tanh over the recorded arguments
    error_after: np.ndarray  # [n] rms(k s − tanh) / rms tanh
    fitted: np.ndarray  # [n] bool: tanh channels with a recorded signal


def fit_output_scales(states: np.ndarray, sigma_gain: np.ndarray, tanh_channels: np.ndarray,
                      rails: tuple[float, float], exponent: float) -> OutputScales:
    """Least-squares k per channel of k·s(u) ≈ tanh(u), u = σ-gain · clip(z, rails), over ``states`` [S, n]
    (volts)."""
    argument = np.clip(states, rails[0], rails[1]) * sigma_gain[None, :]
    wanted = np.tanh(argument)
    machine = algebraic_sigmoid(argument, exponent)
    signal = np.sum(wanted * wanted, axis=0)
    fitted = np.asarray(tanh_channels, dtype=bool) & (signal > SIGNAL_FLOOR)
    overlap = np.sum(machine * wanted, axis=0)
    power = np.sum(machine * machine, axis=0)
    scale = np.where(fitted, overlap / np.maximum(power, 1e-300), 1.0)
    scale = np.clip(scale, SCALE_FLOOR, 1.0)
    norm = np.sqrt(np.maximum(signal, 1e-300))
    before = np.sqrt(np.sum((machine - wanted) ** 2, axis=0)) / norm
    after = np.sqrt(np.sum((scale[None, :] * machine - wanted) ** 2, axis=0)) / norm
    zero = np.zeros_like(before)
    return OutputScales(scale, np.where(fitted, before, zero), np.where(fitted, after, zero), fitted)


def fold_into_rows(transmission: np.ndarray, column_scale: np.ndarray, beta: np.ndarray, floor: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One tile's signed transmissions [rows, columns] with each column × k, each row renormalised to the
    peak it had (β lowered by the same factor, not below ``floor``): (transmissions, β). β·T is T·k's."""
    scaled = transmission * column_scale[None, :]
    peak_before = np.max(np.abs(transmission), axis=1, initial=0.0)
    peak_after = np.max(np.abs(scaled), axis=1, initial=0.0)
    factor = np.where(peak_before > 0, peak_after / np.where(peak_before > 0, peak_before, 1.0), 1.0)
    factor = np.maximum(factor, np.minimum(floor / np.maximum(beta, 1e-300), 1.0))
    factor = np.where(factor > 0, factor, 1.0)
    return scaled / factor[:, None], beta * factor


def report(scales: OutputScales, exponent: float) -> dict:
    fitted = np.flatnonzero(scales.fitted)

    def rms(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(values[fitted] ** 2))) if fitted.size else 0.0

    return {
        "meaning": "the description's σ shape s(u) = u/(1+|u|^c)^(1/c) compensated per state channel: the SLM "
                   "column a channel drives is scaled by k (least squares k·s(u) ≈ tanh(u) over the arguments "
                   "the ideal program drives it with); the images hold T·k, the stored transmissions T (what "
                   "the program means), and the twin multiplies k back in when it applies s",
        "exponent": exponent,
        "output_scale": PAYLOAD,
        "layout": "per state channel (1: not compensated)",
        "channels_fitted": int(fitted.size),
        "scale_min": float(np.min(scales.scale[fitted], initial=1.0)),
        "scale_max": float(np.max(scales.scale[fitted], initial=1.0)),
        "sigma_error_uncompensated": rms(scales.error_before),
        "sigma_error_compensated": rms(scales.error_after),
    }


def summary_line(section: dict) -> str:
    return (f"σ shape     s(u) = u/(1+|u|^{section['exponent']:g})^(1/{section['exponent']:g}) compensated on "
            f"{section['channels_fitted']} channels: column scale {section['scale_min']:.3f}–"
            f"{section['scale_max']:.3f}; rms error against tanh {section['sigma_error_uncompensated']:.3f} → "
            f"{section['sigma_error_compensated']:.3f}")


def port_scales(scale: np.ndarray, input_channel: np.ndarray) -> np.ndarray:
    """[M, P] k of the channel each input port is driven by (1 on unused ports, marked ≥ len(scale) or < 0)."""
    padded = np.append(np.asarray(scale, dtype=np.float64), 1.0)
    index = np.where((input_channel >= 0) & (input_channel < scale.size), input_channel, scale.size)
    return padded[index]
