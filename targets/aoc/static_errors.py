"""Static device errors of AOC modules: the per-device quantities a machine is built with, drawn once.

Requires: a ``NonIdealities`` (its parameters; its ``enabled`` switches do not matter here), a module count and
size, and optionally a ``torch.Generator``.
Guarantees: ``sample_static_errors`` draws every quantity of ``StaticErrors``, always all of them in one fixed
order, so a seed fixes every draw and switching one effect on or off never changes the others' values;
randomness comes only from the generator (default: seeded from ``nonidealities.seed``). The shapes follow the
measured machine (calibrations/FIELDS.md): fan-in efficiency low at the array edges, photodiode crosstalk
largest at the array ends, darkness and PBS leakage spread about their means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from admc.targets.aoc.nonidealities import InputEfficiency, NonIdealities, PdCrosstalk


@dataclass(frozen=True)
class StaticErrors:
    """Per-device quantities drawn once. Shapes [modules, ports] or [modules, ports, ports] ([m, out, in]).

    Values are stored as drawn from the non-idealities' parameters whether or not the effect is enabled; the
    ``enabled`` switches decide at use. A leading module size of 1 broadcasts over any number of modules.
    """

    weight_factor_positive: torch.Tensor
    weight_factor_negative: torch.Tensor
    darkness_positive: torch.Tensor
    darkness_negative: torch.Tensor
    input_efficiency_positive: torch.Tensor
    input_efficiency_negative: torch.Tensor
    crosstalk_to_earlier: torch.Tensor
    crosstalk_to_later: torch.Tensor
    pbs_leakage_positive: torch.Tensor
    pbs_leakage_negative: torch.Tensor
    offsets: torch.Tensor
    gain_factor: torch.Tensor

    def module(self, index: int) -> StaticErrors:
        """The errors of one module, keeping a module axis of size 1."""
        sliced = {item.name: getattr(self, item.name)[index : index + 1] for item in fields(self)}
        return StaticErrors(**sliced)

    def with_values(self, **changes: torch.Tensor) -> StaticErrors:
        return replace(self, **changes)


def _efficiency_profile(
    settings: InputEfficiency, modules: int, ports: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    # Measured fan-in efficiency is low at both array edges and peaks mid-array (calibrations/FIELDS.md §5); a half
    # sine with a small random centre shift per module reproduces that smoothly between minimum and maximum.
    shift = (torch.rand(modules, 1, generator=generator, dtype=dtype) - 0.5) * 0.1
    position = (torch.arange(ports, dtype=dtype) + 0.5) / ports
    shape = torch.sin(math.pi * (position + shift).clamp(0.0, 1.0))
    profile = settings.minimum + (settings.maximum - settings.minimum) * shape
    for channel in settings.dead_channels:
        if 0 <= channel < ports:
            profile[:, channel] = 0.0
    return profile


def _crosstalk_profile(
    settings: PdCrosstalk, modules: int, ports: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    # Crosstalk is ~0.2-0.3 at the array ends and a few percent mid-array (calibrations/FIELDS.md); decay ~ports/16.
    index = torch.arange(ports, dtype=dtype)
    distance_to_end = torch.minimum(index, ports - 1 - index)
    width = max(ports / 16.0, 1.0)
    excess = settings.edge_ratio - settings.middle_ratio
    base = settings.middle_ratio + excess * torch.exp(-distance_to_end / width)
    jitter = 0.8 + 0.4 * torch.rand(modules, ports, generator=generator, dtype=dtype)
    return base * jitter


def sample_static_errors(
    nonidealities: NonIdealities,
    modules: int,
    ports: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> StaticErrors:
    """Draw every static per-device quantity once (generator default: seeded from ``nonidealities.seed``), in
    float64 whatever ``dtype`` is, then cast: a seed is one chip, whether its twin runs in float32 or float64 (a
    float32 draw is another stream of numbers, so another chip)."""
    drawn = _draw(nonidealities, modules, ports, generator)
    if dtype == torch.float64:
        return drawn
    return StaticErrors(*(getattr(drawn, entry.name).to(dtype) for entry in fields(StaticErrors)))


def _draw(nonidealities: NonIdealities, modules: int, ports: int, generator: torch.Generator | None) -> StaticErrors:
    if generator is None:
        generator = torch.Generator().manual_seed(nonidealities.seed)
    settings = nonidealities
    dtype = torch.float64

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=dtype)

    # Fixed draw order: the realisation of one effect never depends on which others are enabled.
    weight_std = settings.weight_error.relative_std
    weight_factor_positive = 1.0 + weight_std * normal(modules, ports, ports)
    weight_factor_negative = 1.0 + weight_std * normal(modules, ports, ports)
    # Per-column darkness spreads about x0.5-x1.5 around its mean in the measured machine (calibrations/FIELDS.md).
    floor = settings.slm_darkness.floor
    darkness_positive = floor * uniform(0.5, 1.5, modules, ports)
    darkness_negative = floor * uniform(0.5, 1.5, modules, ports)
    efficiency = settings.input_efficiency
    input_efficiency_positive = _efficiency_profile(efficiency, modules, ports, generator, dtype)
    input_efficiency_negative = _efficiency_profile(efficiency, modules, ports, generator, dtype)
    crosstalk_to_earlier = _crosstalk_profile(settings.pd_crosstalk, modules, ports, generator, dtype)
    crosstalk_to_later = _crosstalk_profile(settings.pd_crosstalk, modules, ports, generator, dtype)
    leakage = settings.pbs_crosstalk.leakage
    pbs_leakage_positive = leakage * uniform(0.5, 1.5, modules, ports)
    pbs_leakage_negative = leakage * uniform(0.5, 1.5, modules, ports)
    offsets = settings.offsets.std * normal(modules, ports)
    gain_factor = 1.0 + settings.gain_error.relative_std * normal(modules, ports)
    return StaticErrors(weight_factor_positive, weight_factor_negative, darkness_positive, darkness_negative,
                        input_efficiency_positive, input_efficiency_negative, crosstalk_to_earlier,
                        crosstalk_to_later, pbs_leakage_positive, pbs_leakage_negative, offsets, gain_factor)
