"""The ``nonidealities`` section of the AOC description: which effects the twin applies, with their parameters.

Requires: nothing. Guarantees: :class:`NonIdealitiesSection` declares each effect once for the description
(its range and documentation; every field of a hardware effect required, the measured chain's switches off by
default), with the entry and parameter names of the twin's ``admc.targets.aoc.nonidealities.NonIdealities``,
which reads this section from a bundle (a test checks that the two name the same entries and parameters).
"""

from __future__ import annotations

from typing import Any

from admc.targets.description_models import REQUIRED, Section, integers, leaf, section


def switch(effect: str, default: Any = REQUIRED) -> Any:
    """The ``enabled`` field of an effect's section."""
    return leaf(f"apply {effect} in the twin's hardware mode", default)


class SlmDarkness(Section):
    enabled: bool = switch("SLM darkness")
    floor: float = leaf("darkness c / full scale (a + b + c)", minimum=0, maximum=1)


class WeightError(Section):
    enabled: bool = switch("static per-pixel weight error")
    relative_std: float = leaf("std of the programming error / weight", minimum=0, maximum=10)


class InputEfficiency(Section):
    enabled: bool = switch("per-source fan-in efficiency")
    minimum: float = leaf("lowest efficiency of a live channel", minimum=0, maximum=10)
    maximum: float = leaf("highest efficiency", minimum=0, maximum=10)
    dead_channels: integers(0, 1_000_000) = leaf("channel indices (0-based) that transmit nothing")


class PdCrosstalk(Section):
    enabled: bool = switch("photodiode neighbour crosstalk")
    edge_ratio: float = leaf("spill fraction near the array ends", minimum=0, maximum=1)
    middle_ratio: float = leaf("spill fraction mid-array", minimum=0, maximum=1)


class PbsCrosstalk(Section):
    enabled: bool = switch("polarising beam splitter leakage")
    leakage: float = leaf("fraction of source light leaking into the detector", minimum=0, maximum=1)


class Offsets(Section):
    enabled: bool = switch("per-channel offsets")
    std: float = leaf("std of the offsets (V)", minimum=0, maximum=100)


class GainError(Section):
    enabled: bool = switch("per-channel gain error")
    relative_std: float = leaf("std of gain / gain", minimum=0, maximum=10)


class Nonlinearity(Section):
    enabled: bool = switch("the measured algebraic sigmoid z / (1 + |z|^c)^(1/c) instead of tanh")
    exponent: float = leaf("exponent c", minimum=0.1, maximum=100)


class Saturation(Section):
    enabled: bool = switch("state voltage saturation")
    low: float = leaf("lower rail (V)", minimum=-100, maximum=100)
    high: float = leaf("upper rail (V)", minimum=-100, maximum=100)


class ReadNoise(Section):
    enabled: bool = switch("temporally white read noise")
    std: float = leaf("std per loop iteration (V)", minimum=0, maximum=100)


class InjectionClip(Section):
    enabled: bool = switch("clipping of injected voltages")
    limit: float = leaf("clip to ± limit (V)", minimum=0, maximum=100)


# The measured chain's effects act only with a calibration file (off unless a file switches them on).
class LedResponse(Section):
    enabled: bool = switch("each path's measured LED cubic (measured chain, with a calibration)", False)


class SigmoidOffsets(Section):
    enabled: bool = switch("the measured sigmoid's offsets b, f and linear term g (with a calibration)", False)


class SlmTransfer(Section):
    enabled: bool = switch("each column's and path's measured SLM transfer (with a calibration)", False)


class OutputGain(Section):
    enabled: bool = switch("each detector's and path's output gain η (with a calibration)", False)


class NonIdealitiesSection(Section):
    """Which hardware non-idealities the twin applies, with their parameters, and the seed of its draws."""

    seed: int = leaf("seed of the twin's random draws", minimum=0, maximum=2**63 - 1)
    slm_darkness: SlmDarkness = section()
    weight_error: WeightError = section()
    input_efficiency: InputEfficiency = section()
    pd_crosstalk: PdCrosstalk = section()
    pbs_crosstalk: PbsCrosstalk = section()
    offsets: Offsets = section()
    gain_error: GainError = section()
    nonlinearity: Nonlinearity = section()
    saturation: Saturation = section()
    read_noise: ReadNoise = section()
    injection_clip: InjectionClip = section()
    led_response: LedResponse = section()
    sigmoid_offsets: SigmoidOffsets = section()
    slm_transfer: SlmTransfer = section()
    output_gain: OutputGain = section()
