"""The AOC twin's settle check (``AocTwin._settle_residual``) on synthetic windowed readouts.

A settled loop's readout is its fixed point plus read noise that the relaxation low-pass filters: with α = 0.9
on the readout rows it is an AR(1) process with correlation ≈ 0.9 per iteration, so window samples are far from
independent. Such a loop must count as settled; a loop whose readout still moves (alike in every repeat) must
not. Expected values come from the construction of the samples, not from the twin.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from admc.targets.aoc.twin import AocTwin
from admc.targets.aoc.twin_phases import SETTLE_TOLERANCE

REPEATS, BATCH, DIMENSION, WINDOW = 5, 32, 2, 80


def _readouts(correlation: float, std: float, drift: float, seed: int) -> list[torch.Tensor]:
    """[WINDOW] readouts of [REPEATS · BATCH, DIMENSION]: level 0.5 + a ramp of total ``drift`` over the window
    (the same in every repeat) + stationary AR(1) noise of standard deviation ``std``."""
    generator = np.random.default_rng(seed)
    innovation = std * np.sqrt(1.0 - correlation**2)
    noise = std * generator.standard_normal((REPEATS * BATCH, DIMENSION))
    samples = []
    for index in range(WINDOW):
        noise = correlation * noise + innovation * generator.standard_normal(noise.shape)
        samples.append(torch.as_tensor(0.5 + drift * index / (WINDOW - 1) + noise))
    return samples


def _settle(readouts: list[torch.Tensor]) -> float:
    return AocTwin._settle_residual(SimpleNamespace(repeats=REPEATS), readouts)


def test_a_settled_loop_with_low_pass_filtered_noise_counts_as_settled() -> None:
    # α = 0.9 and noise of a few hundredths: the aoc-48 guided example's state rows. Judged as if the window's
    # samples were independent, the half-window means' difference exceeds its allowance by ~SETTLE_TOLERANCE.
    for seed in range(5):
        assert _settle(_readouts(0.9, 0.05, 0.0, seed)) < SETTLE_TOLERANCE / 4


def test_a_drifting_loop_is_still_caught_under_correlated_noise() -> None:
    # A ramp of 0.3 over the window: the halves' means differ by ~0.15, over seven times SETTLE_TOLERANCE.
    for seed in range(5):
        assert _settle(_readouts(0.9, 0.05, 0.3, seed)) > SETTLE_TOLERANCE


def test_white_noise_and_no_noise_count_as_settled() -> None:
    assert _settle(_readouts(0.0, 0.05, 0.0, 0)) < SETTLE_TOLERANCE / 4
    assert _settle(_readouts(0.0, 0.0, 0.0, 0)) == 0.0
