"""The AOC's switchable non-idealities: which effects the twin applies, with their parameters.

One definition serves the target description (``targets/aoc/description.py`` builds it from the validated
YAML), the physics, the bundle twin and the differentiable twin. Every effect is off by default;
``from_mapping`` reads the description's nested form ``{name: {enabled: ..., parameter: ...}, seed: n}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from admc.core.errors import AdmcError


@dataclass(frozen=True)
class SlmDarkness:
    enabled: bool = False
    floor: float = 0.04  # darkness transmission relative to full scale


@dataclass(frozen=True)
class WeightError:
    enabled: bool = False
    relative_std: float = 0.01  # static, per pixel and path


@dataclass(frozen=True)
class InputEfficiency:
    enabled: bool = False
    minimum: float = 0.5
    maximum: float = 1.3
    dead_channels: tuple[int, ...] = ()


@dataclass(frozen=True)
class PdCrosstalk:
    enabled: bool = False
    edge_ratio: float = 0.25
    middle_ratio: float = 0.03


@dataclass(frozen=True)
class PbsCrosstalk:
    enabled: bool = False
    leakage: float = 0.005


@dataclass(frozen=True)
class Offsets:
    enabled: bool = False
    std: float = 0.01  # volts, per channel


@dataclass(frozen=True)
class GainError:
    enabled: bool = False
    relative_std: float = 0.05  # per channel


@dataclass(frozen=True)
class Nonlinearity:
    enabled: bool = False
    exponent: float = 4.265  # c of s(z) = z / (1 + |z|^c)^(1/c)


@dataclass(frozen=True)
class Saturation:
    enabled: bool = False
    low: float = -3.29
    high: float = 2.85


@dataclass(frozen=True)
class ReadNoise:
    enabled: bool = False
    std: float = 0.01  # volts, temporally white, per iteration (or per sample time in continuous time)


@dataclass(frozen=True)
class InjectionClip:
    enabled: bool = False
    limit: float = 1.3


@dataclass(frozen=True)
class LedResponse:
    """Measured chain only: each path's LED cubic P±(t) instead of the nominal linear slope."""

    enabled: bool = False


@dataclass(frozen=True)
class SigmoidOffsets:
    """Measured chain only: the sigmoid's input offset b, output offset f and linear term g."""

    enabled: bool = False


@dataclass(frozen=True)
class SlmTransfer:
    """Measured chain only: each column's and path's quadratic SLM transfer instead of the nominal one."""

    enabled: bool = False


@dataclass(frozen=True)
class OutputGain:
    """Measured chain only: each detector's and path's output gain η instead of the nominal mean."""

    enabled: bool = False


# The effects that act only when the twin runs with a measured machine's calibration file (they replace a
# nominal curve by a per-channel measured one, and a description holds no per-channel tables).
MEASURED_CHAIN_EFFECTS = ("led_response", "sigmoid_offsets", "slm_transfer", "output_gain")


@dataclass(frozen=True)
class NonIdealities:
    """Which hardware non-idealities are on, with their parameters; every one is off by default."""

    slm_darkness: SlmDarkness = field(default_factory=SlmDarkness)
    weight_error: WeightError = field(default_factory=WeightError)
    input_efficiency: InputEfficiency = field(default_factory=InputEfficiency)
    pd_crosstalk: PdCrosstalk = field(default_factory=PdCrosstalk)
    pbs_crosstalk: PbsCrosstalk = field(default_factory=PbsCrosstalk)
    offsets: Offsets = field(default_factory=Offsets)
    gain_error: GainError = field(default_factory=GainError)
    nonlinearity: Nonlinearity = field(default_factory=Nonlinearity)
    saturation: Saturation = field(default_factory=Saturation)
    read_noise: ReadNoise = field(default_factory=ReadNoise)
    injection_clip: InjectionClip = field(default_factory=InjectionClip)
    led_response: LedResponse = field(default_factory=LedResponse)
    sigmoid_offsets: SigmoidOffsets = field(default_factory=SigmoidOffsets)
    slm_transfer: SlmTransfer = field(default_factory=SlmTransfer)
    output_gain: OutputGain = field(default_factory=OutputGain)
    seed: int = 0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> NonIdealities:
        """Build from the description's nested form ``{name: {enabled: ..., parameter: ...}, seed: n}``."""
        entry_types = {item.name: item.default_factory for item in fields(cls) if item.name != "seed"}
        values: dict[str, Any] = {}
        for name, entry in mapping.items():
            if name == "seed":
                values["seed"] = int(entry)
                continue
            if name not in entry_types:
                raise AdmcError(f"nonidealities: unknown entry {name!r}; known: {sorted(entry_types)}")
            if not isinstance(entry, Mapping):
                raise AdmcError(f"nonidealities.{name}: expected a mapping, got {type(entry).__name__}")
            entry_type = entry_types[name]
            allowed = {item.name: item for item in fields(entry_type)}
            unknown = set(entry) - set(allowed)
            if unknown:
                raise AdmcError(
                    f"nonidealities.{name}: unknown parameters {sorted(unknown)}; known: {sorted(allowed)}"
                )
            arguments = {}
            for key, value in entry.items():
                if key == "enabled":
                    arguments[key] = bool(value)
                elif key == "dead_channels":
                    arguments[key] = tuple(int(channel) for channel in value)
                else:
                    arguments[key] = float(value)
            values[name] = entry_type(**arguments)
        return cls(**values)
