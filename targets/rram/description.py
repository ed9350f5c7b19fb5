"""The resistive-memory (RRAM) crossbar target description: schema and frozen dataclasses.

Requires: data already validated against :data:`SCHEMA` (``admc.targets.description_schema``).
Guarantees: :meth:`RramTarget.from_mapping` adds the cross-field checks a schema cannot express (ordered
ranges, an on/off ratio above 1) and raises AdmcError naming the file and field; ``to_dict()`` is plain
JSON-able data and ``from_mapping(to_dict())`` rebuilds an equal target. The target declares what shared
passes read: its activations, that it solves the flow in continuous time, and the module path of its backend.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar

from admc.core.errors import AdmcError
from admc.targets.description_schema import Field
from admc.targets.estimate_spec import EstimateSpec, estimate_schema


def _switch(doc: str, **parameters: Field) -> dict:
    return {"enabled": Field("bool", f"apply {doc} in the twin"), **parameters}


SCHEMA = {
    "kind": Field("str", "target kind", choices=("rram",)),
    "name": Field("str", "target name"),
    "description": Field("str", "one line for reports", default=""),
    "linear_channels": Field("bool", "whether a channel may drive the crossbar rows without an activation"),
    "activations": {
        "relu": Field("bool", "the periphery computes ReLU"),
        "tanh": Field("bool", "the periphery computes tanh"),
    },
    "crossbar": {
        "size": Field("int", "rows = columns of one crossbar", minimum=1, maximum=4096),
        "count": Field("int", "crossbars available", minimum=1, maximum=1_000_000),
    },
    "conductance": {
        "g_min_us": Field("float", "lowest programmable conductance (µS)", minimum=0, maximum=1e6),
        "g_max_us": Field("float", "highest programmable conductance (µS)", minimum=0, maximum=1e6),
        "levels": Field("int", "programmable levels per device, G_min and G_max included", minimum=2,
                        maximum=1_000_000),
        "float_levels": Field("bool", "true: no quantisation (exact conductances, for tests)", default=False),
    },
    "periphery": {
        "read_voltage_v": Field("float", "largest voltage driven onto a crossbar row (V)", minimum=0, maximum=10),
        "tia_gain_min_ohm": Field("float", "smallest transimpedance of a column amplifier (Ω)", minimum=0,
                                  maximum=1e12),
        "tia_gain_max_ohm": Field("float", "largest transimpedance (Ω)", minimum=0, maximum=1e12),
        "dac_bits": Field("int", "resolution of the DACs driving time and start inputs", minimum=1, maximum=32),
        "dac_rate_hz": Field("float", "DAC update rate (samples/s)", minimum=0, maximum=1e12),
        "adc_bits": Field("int", "resolution of the readout ADC", minimum=1, maximum=32),
    },
    "integrator": {
        "time_constant_min_s": Field("float", "smallest integrator time constant R·C (s)", minimum=0, maximum=1e3),
        "time_constant_max_s": Field("float", "largest integrator time constant R·C (s)", minimum=0, maximum=1e3),
        "leakage_time_constant_s": Field("float", "time constant of the integrator's leak (s)", minimum=0,
                                         maximum=1e9),
    },
    "timing": {
        "layer_bandwidth_hz": Field("float", "-3 dB bandwidth of one crossbar layer with its periphery",
                                    minimum=0, maximum=1e12),
        "settling_margin": Field("float", "required ratio of the state's fastest time scale to the layers' "
                                 "settling time", minimum=1, maximum=1e9),
    },
    "nonidealities": {
        "seed": Field("int", "seed of the twin's chip and noise draws", minimum=0, maximum=2**63 - 1),
        "programming_noise": _switch(
            "static per-device programming error",
            relative_std=Field("float", "std of the error / G_max", minimum=0, maximum=1)),
        "read_noise": _switch(
            "white read noise of every device",
            relative_std=Field("float", "std of the current fluctuation / the device's current", minimum=0,
                               maximum=1)),
        "drift": _switch(
            "power-law conductance drift G(t) = G (t / t0)^-ν",
            exponent=Field("float", "drift exponent ν", minimum=0, maximum=1),
            reference_time_s=Field("float", "t0, when the devices were read after programming (s)", minimum=0,
                                   maximum=1e12),
            time_after_programming_s=Field("float", "t, when the chip runs (s)", minimum=0, maximum=1e12)),
        "bandwidth": _switch("each layer's finite bandwidth (first-order low pass)"),
        "leakage": _switch("the integrator's leak"),
        "dac_quantisation": _switch("DAC sampling and quantisation of the time and start inputs"),
        "adc_quantisation": _switch("ADC quantisation of the readout"),
        "relu_offset": _switch(
            "static per-channel offset of the activation circuits",
            std=Field("float", "std of the offset, in units of the channel's full scale", minimum=0, maximum=1)),
    },
    "twin": {
        "steps": Field("int", "Euler-Maruyama steps of the twin over the unit of model time", minimum=1,
                       maximum=10_000_000),
    },
    "estimate": estimate_schema(),
}


@dataclass(frozen=True)
class Activations:
    relu: bool
    tanh: bool


@dataclass(frozen=True)
class Crossbar:
    size: int
    count: int


@dataclass(frozen=True)
class Conductance:
    g_min_us: float
    g_max_us: float
    levels: int
    float_levels: bool = False

    @property
    def level_step_us(self) -> float:
        return (self.g_max_us - self.g_min_us) / (self.levels - 1)


@dataclass(frozen=True)
class Periphery:
    read_voltage_v: float
    tia_gain_min_ohm: float
    tia_gain_max_ohm: float
    dac_bits: int
    dac_rate_hz: float
    adc_bits: int


@dataclass(frozen=True)
class Integrator:
    time_constant_min_s: float
    time_constant_max_s: float
    leakage_time_constant_s: float


@dataclass(frozen=True)
class Timing:
    layer_bandwidth_hz: float
    settling_margin: float


@dataclass(frozen=True)
class Switch:
    enabled: bool


@dataclass(frozen=True)
class RelativeNoise:
    enabled: bool
    relative_std: float


@dataclass(frozen=True)
class Drift:
    enabled: bool
    exponent: float
    reference_time_s: float
    time_after_programming_s: float


@dataclass(frozen=True)
class Offset:
    enabled: bool
    std: float


@dataclass(frozen=True)
class NonIdealities:
    seed: int
    programming_noise: RelativeNoise
    read_noise: RelativeNoise
    drift: Drift
    bandwidth: Switch
    leakage: Switch
    dac_quantisation: Switch
    adc_quantisation: Switch
    relu_offset: Offset


@dataclass(frozen=True)
class TwinSettings:
    steps: int


@dataclass(frozen=True)
class RramTarget:
    """One RRAM chip: crossbars, devices, periphery, integrators, timing and the twin's non-idealities."""

    kind: str
    name: str
    description: str
    linear_channels: bool
    activations_computed: Activations
    crossbar: Crossbar
    conductance: Conductance
    periphery: Periphery
    integrator: Integrator
    timing: Timing
    nonidealities: NonIdealities
    twin: TwinSettings
    estimate: EstimateSpec = EstimateSpec()

    backend: ClassVar[str] = "admc.targets.rram.target_backend"
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"continuous"})
    default_solver: ClassVar[str] = "continuous"
    calibration_only_effects: ClassVar[tuple[str, ...]] = ()  # no effect needs a calibration file

    @property
    def activations(self) -> tuple[str, ...]:
        """The nonlinearities the periphery computes, by name (read by canonicalisation)."""
        return tuple(name for name in ("relu", "tanh") if getattr(self.activations_computed, name))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> RramTarget:
        """Build from a validated description; ``label`` names the file in cross-field errors."""
        values = dict(data)
        values["activations_computed"] = values.pop("activations")
        target = _build(cls, values)
        _check_consistency(target, label)
        return target

    def to_dict(self) -> dict:
        """The resolved description as plain data, in the YAML's field names."""
        data = dataclasses.asdict(self)
        data["activations"] = data.pop("activations_computed")
        return data


def _build(cls: type, data: dict) -> typing.Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        value = data[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            value = _build(hints[field.name], value)
        values[field.name] = value
    return cls(**values)


def _check_consistency(target: RramTarget, label: str) -> None:
    def fail(path: str, message: str) -> None:
        raise AdmcError(f"{label}: field '{path}': {message}")

    ordered = [
        ("conductance.g_min_us", target.conductance.g_min_us, "conductance.g_max_us", target.conductance.g_max_us),
        ("periphery.tia_gain_min_ohm", target.periphery.tia_gain_min_ohm,
         "periphery.tia_gain_max_ohm", target.periphery.tia_gain_max_ohm),
        ("integrator.time_constant_min_s", target.integrator.time_constant_min_s,
         "integrator.time_constant_max_s", target.integrator.time_constant_max_s),
    ]
    for low_path, low, high_path, high in ordered:
        if low >= high:
            fail(low_path, f"{low:g} must be below {high_path} = {high:g}")
    for path, value in (("timing.layer_bandwidth_hz", target.timing.layer_bandwidth_hz),
                        ("periphery.dac_rate_hz", target.periphery.dac_rate_hz),
                        ("periphery.read_voltage_v", target.periphery.read_voltage_v)):
        if value <= 0:
            fail(path, f"expected a positive value, got {value:g}")
