"""The resistive-memory (RRAM) crossbar target description: one frozen pydantic model.

Requires: nothing. Guarantees: :class:`RramTarget` is the description's one declaration
(``admc.targets.description_models``); :meth:`RramTarget.from_mapping` validates a complete description and
adds the cross-field checks a field cannot express (ordered ranges, an on/off ratio above 1), raising
AdmcError naming the file and field; ``to_dict()`` is plain JSON-able data and ``from_mapping(to_dict())``
rebuilds an equal target. The target declares what shared passes read: its activations, that it solves the
flow in continuous time, and the module path of its backend.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from admc.core.errors import AdmcError
from admc.targets.description_models import Section, leaf, section
from admc.targets.description_schema import validate
from admc.targets.estimate_spec import EstimateSpec


def switch(effect: str) -> Any:
    """The ``enabled`` field of a non-ideality section."""
    return leaf(f"apply {effect} in the twin")


class Activations(Section):
    relu: bool = leaf("the periphery computes ReLU")
    tanh: bool = leaf("the periphery computes tanh")


class Crossbar(Section):
    size: int = leaf("rows = columns of one crossbar", minimum=1, maximum=4096)
    count: int = leaf("crossbars available", minimum=1, maximum=1_000_000)


class Conductance(Section):
    g_min_us: float = leaf("lowest programmable conductance (µS)", minimum=0, maximum=1e6)
    g_max_us: float = leaf("highest programmable conductance (µS)", minimum=0, maximum=1e6)
    levels: int = leaf("programmable levels per device, G_min and G_max included", minimum=2, maximum=1_000_000)
    float_levels: bool = leaf("true: no quantisation (exact conductances, for tests)", False)

    @property
    def level_step_us(self) -> float:
        return (self.g_max_us - self.g_min_us) / (self.levels - 1)


class Periphery(Section):
    read_voltage_v: float = leaf("largest voltage driven onto a crossbar row (V)", minimum=0, maximum=10)
    tia_gain_min_ohm: float = leaf("smallest transimpedance of a column amplifier (Ω)", minimum=0, maximum=1e12)
    tia_gain_max_ohm: float = leaf("largest transimpedance (Ω)", minimum=0, maximum=1e12)
    dac_bits: int = leaf("resolution of the DACs driving time and start inputs", minimum=1, maximum=32)
    dac_rate_hz: float = leaf("DAC update rate (samples/s)", minimum=0, maximum=1e12)
    adc_bits: int = leaf("resolution of the readout ADC", minimum=1, maximum=32)


class Integrator(Section):
    time_constant_min_s: float = leaf("smallest integrator time constant R·C (s)", minimum=0, maximum=1e3)
    time_constant_max_s: float = leaf("largest integrator time constant R·C (s)", minimum=0, maximum=1e3)
    leakage_time_constant_s: float = leaf("time constant of the integrator's leak (s)", minimum=0, maximum=1e9)


class Timing(Section):
    layer_bandwidth_hz: float = leaf("-3 dB bandwidth of one crossbar layer with its periphery", minimum=0,
                                     maximum=1e12)
    settling_margin: float = leaf("required ratio of the state's fastest time scale to the layers' settling time",
                                  minimum=1, maximum=1e9)


class ProgrammingNoise(Section):
    enabled: bool = switch("static per-device programming error")
    relative_std: float = leaf("std of the error / G_max", minimum=0, maximum=1)


class ReadNoise(Section):
    enabled: bool = switch("white read noise of every device")
    relative_std: float = leaf("std of the current fluctuation / the device's current", minimum=0, maximum=1)


class Drift(Section):
    enabled: bool = switch("power-law conductance drift G(t) = G (t / t0)^-ν")
    exponent: float = leaf("drift exponent ν", minimum=0, maximum=1)
    reference_time_s: float = leaf("t0, when the devices were read after programming (s)", minimum=0, maximum=1e12)
    time_after_programming_s: float = leaf("t, when the chip runs (s)", minimum=0, maximum=1e12)


class Bandwidth(Section):
    enabled: bool = switch("each layer's finite bandwidth (first-order low pass)")


class Leakage(Section):
    enabled: bool = switch("the integrator's leak")


class DacQuantisation(Section):
    enabled: bool = switch("DAC sampling and quantisation of the time and start inputs")


class AdcQuantisation(Section):
    enabled: bool = switch("ADC quantisation of the readout")


class ReluOffset(Section):
    enabled: bool = switch("static per-channel offset of the activation circuits")
    std: float = leaf("std of the offset, in units of the channel's full scale", minimum=0, maximum=1)


class NonIdealities(Section):
    seed: int = leaf("seed of the twin's chip and noise draws", minimum=0, maximum=2**63 - 1)
    programming_noise: ProgrammingNoise = section()
    read_noise: ReadNoise = section()
    drift: Drift = section()
    bandwidth: Bandwidth = section()
    leakage: Leakage = section()
    dac_quantisation: DacQuantisation = section()
    adc_quantisation: AdcQuantisation = section()
    relu_offset: ReluOffset = section()


class TwinSettings(Section):
    steps: int = leaf("Euler-Maruyama steps of the twin over the unit of model time", minimum=1, maximum=10_000_000)


class RramTarget(Section):
    """One RRAM chip: crossbars, devices, periphery, integrators, timing and the twin's non-idealities."""

    kind: Literal["rram"] = leaf("target kind")
    name: str = leaf("target name")
    description: str = leaf("one line for reports", "")
    linear_channels: bool = leaf("whether a channel may drive the crossbar rows without an activation")
    activations_computed: Activations = section("activations")
    crossbar: Crossbar = section()
    conductance: Conductance = section()
    periphery: Periphery = section()
    integrator: Integrator = section()
    timing: Timing = section()
    nonidealities: NonIdealities = section()
    twin: TwinSettings = section()
    estimate: EstimateSpec = section()

    backend: ClassVar[str] = "admc.targets.rram.target_backend"
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"continuous"})
    default_solver: ClassVar[str] = "continuous"
    calibration_only_effects: ClassVar[tuple[str, ...]] = ()  # no effect needs a calibration file
    presets: ClassVar[dict[str, str | None]] = {"rram-128": "presets/rram-128.yaml"}
    aliases: ClassVar[dict[str, str]] = {"rram": "rram-128"}

    @property
    def activations(self) -> tuple[str, ...]:
        """The nonlinearities the periphery computes, by name (read by canonicalisation)."""
        return tuple(name for name in ("relu", "tanh") if getattr(self.activations_computed, name))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> RramTarget:
        """Validate a complete description; ``label`` names the file in errors."""
        target = validate(data, cls, label)
        _check_consistency(target, label)
        return target

    def to_dict(self) -> dict:
        """The resolved description as plain data, in the YAML's field names."""
        return self.model_dump(by_alias=True)


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
