"""The analog optical computer (AOC) target description: schema and frozen dataclasses.

Requires: data already validated against :data:`SCHEMA` (see ``admc.targets.description_schema``).
Guarantees: :meth:`AocTarget.from_mapping` adds the cross-field checks a schema cannot express (ranges that
must be ordered, a monotone SLM response, dead channels inside the module) and raises AdmcError naming the
file and field; ``to_dict()`` returns the resolved description as plain JSON-able data, and
``from_mapping(to_dict())`` rebuilds an equal target.

The section and field names of ``nonidealities`` are read by the digital twin; change them only together.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar

from admc.core.errors import AdmcError
from admc.ir.adm import algebraic_sigmoid
from admc.targets.aoc.chain import ChainSpec
from admc.targets.aoc.nonidealities import MEASURED_CHAIN_EFFECTS, NonIdealities
from admc.targets.aoc.slm import check_response
from admc.targets.description_schema import Field
from admc.targets.estimate_spec import EstimateSpec, estimate_schema
from admc.targets.loop_spec import LoopSpec, alpha_per_phase_field, loop_schema

INFINITY = float("inf")


def _switch(doc: str, **parameters: Field) -> dict:
    return {"enabled": Field("bool", f"apply {doc} in the twin's hardware mode"), **parameters}


def _chain_switch(doc: str) -> dict:
    return {"enabled": Field("bool", f"apply {doc} in the twin's hardware mode", default=False)}


SCHEMA = {
    "kind": Field("str", "target kind", choices=("aoc",)),
    "name": Field("str", "target name"),
    "description": Field("str", "one line for reports", default=""),
    "linear_channels": Field(
        "bool", "whether channels may skip the sigmoid (false on the AOC: every LED is driven through σ)"
    ),
    "module": {
        "ports": Field("int", "inputs = outputs of one module (weight array is ports x ports)", minimum=1,
                       maximum=4096),
        "count": Field("int", "modules available", minimum=1, maximum=1_000_000),
    },
    "slm": {
        "bit_depth": Field("int", "grey-level bits of the SLM", minimum=1, maximum=16),
        "response": Field("float_list", "transmission a u^2 + b u + c at drive u in [0, 1], [a, b, c]",
                          length=3, minimum=-10, maximum=10),
        "response_positive": Field("float_list", "response of the positive path's SLM (null: use response)",
                                   default=None, length=3, minimum=-10, maximum=10, nullable=True),
        "response_negative": Field("float_list", "response of the negative path's SLM (null: use response)",
                                   default=None, length=3, minimum=-10, maximum=10, nullable=True),
        "float_weights": Field("bool", "true: no quantisation (exact weights, for tests)", default=False),
    },
    "gain": {
        "per_channel": Field("bool", "whether each output channel has its own gain β_i"),
        "setting_min": Field("float", "smallest gain setting of the machine (the makers' beta, machine units)",
                             default=None, minimum=0, maximum=1e9, nullable=True),
        "setting_max": Field("float", "largest gain setting of the machine (machine units)", default=None,
                             minimum=0, maximum=1e9, nullable=True),
        "beta_min": Field("float", "smallest normalised channel gain (null: chain gain × setting_min)",
                          default=None, minimum=0, maximum=1e6, nullable=True),
        "beta_max": Field("float", "largest normalised channel gain (null: chain gain × setting_max)",
                          default=None, minimum=0, maximum=1e6, nullable=True),
    },
    "chain": {
        "sigmoid": Field("float_list", "measured sigmoid S(z) = d s(a z + b) + f + g z, [a, b, c, d, f, g]",
                         default=[1.0, 0.0, 2.0, 1.0, 0.0, 0.0], length=6, minimum=-1e3, maximum=1e3),
        "led_positive": Field("float_list", "LED light of the positive path, cubic in t (descending powers)",
                              default=[0.0, 0.0, 1.0, 0.0], length=4, minimum=-1e3, maximum=1e3),
        "led_negative": Field("float_list", "LED light of the negative path, cubic in t (descending powers)",
                              default=[0.0, 0.0, 1.0, 0.0], length=4, minimum=-1e3, maximum=1e3),
        "slm_full_scale": Field("float", "nominal SLM modulation a + b", default=1.0, minimum=0, maximum=1e3),
        "input_efficiency": Field("float", "nominal fan-in efficiency ρ", default=1.0, minimum=0, maximum=1e3),
        "output_gain": Field("float", "nominal detector output gain η", default=1.0, minimum=0, maximum=1e3),
        "loop_gain": Field("float", "nominal closed-loop gain κ", default=1.0, minimum=0, maximum=1e3),
        "gain_divisor": Field("float", "N of the machine's gain s/N", default=1.0, minimum=1e-9, maximum=1e9),
    },
    "alpha": {
        "min": Field("float", "smallest analog skip fraction α", minimum=0, maximum=1),
        "max": Field("float", "largest analog skip fraction α (< 1)", minimum=0, maximum=1),
        "per_phase": alpha_per_phase_field(False),
    },
    "loop": loop_schema(settle_tolerance=1e-4),
    "sigma": {
        "function": Field("str", "nonlinearity driving the LEDs", choices=("tanh",)),
        "gain_min": Field("float", "smallest programmable σ input gain", minimum=1e-6, maximum=1e3),
        "gain_max": Field("float", "largest programmable σ input gain", minimum=0, maximum=1e3),
    },
    "state": {
        "voltage_min": Field("float", "lower saturation rail of a state channel (V)", minimum=-100, maximum=100),
        "voltage_max": Field("float", "upper saturation rail of a state channel (V)", minimum=-100, maximum=100),
        "injection_clip": Field("float", "injected voltages are clipped to ± this (V)", minimum=0, maximum=100),
    },
    "timing": {
        "bandwidth_hz": Field("float", "-3 dB bandwidth of the loop", minimum=0, maximum=1e12),
        "sample_rate_hz": Field("float", "waveform sample rate", minimum=0, maximum=1e12),
        "loop_iteration_s": Field("float", "time of one loop iteration (time constant τ)", minimum=0,
                                  maximum=1),
        "readout_window": Field("float_list", "fraction [start, end] of the solve averaged at readout",
                                length=2, minimum=0, maximum=1),
        "repeats": Field("int", "repeats averaged per readout", minimum=1, maximum=1_000_000),
    },
    "nonidealities": {
        "seed": Field("int", "seed of the twin's random draws", minimum=0, maximum=2**63 - 1),
        "slm_darkness": _switch(
            "SLM darkness", floor=Field("float", "darkness c / full scale (a + b + c)", minimum=0, maximum=1)),
        "weight_error": _switch(
            "static per-pixel weight error",
            relative_std=Field("float", "std of the programming error / weight", minimum=0, maximum=10)),
        "input_efficiency": _switch(
            "per-source fan-in efficiency",
            minimum=Field("float", "lowest efficiency of a live channel", minimum=0, maximum=10),
            maximum=Field("float", "highest efficiency", minimum=0, maximum=10),
            dead_channels=Field("int_list", "channel indices (0-based) that transmit nothing", minimum=0,
                                maximum=1_000_000)),
        "pd_crosstalk": _switch(
            "photodiode neighbour crosstalk",
            edge_ratio=Field("float", "spill fraction near the array ends", minimum=0, maximum=1),
            middle_ratio=Field("float", "spill fraction mid-array", minimum=0, maximum=1)),
        "pbs_crosstalk": _switch(
            "polarising beam splitter leakage",
            leakage=Field("float", "fraction of source light leaking into the detector", minimum=0, maximum=1)),
        "offsets": _switch(
            "per-channel offsets", std=Field("float", "std of the offsets (V)", minimum=0, maximum=100)),
        "gain_error": _switch(
            "per-channel gain error", relative_std=Field("float", "std of gain / gain", minimum=0, maximum=10)),
        "nonlinearity": _switch(
            "the measured algebraic sigmoid z / (1 + |z|^c)^(1/c) instead of tanh",
            exponent=Field("float", "exponent c", minimum=0.1, maximum=100)),
        "saturation": _switch(
            "state voltage saturation",
            low=Field("float", "lower rail (V)", minimum=-100, maximum=100),
            high=Field("float", "upper rail (V)", minimum=-100, maximum=100)),
        "read_noise": _switch(
            "temporally white read noise",
            std=Field("float", "std per loop iteration (V)", minimum=0, maximum=100)),
        "injection_clip": _switch(
            "clipping of injected voltages", limit=Field("float", "clip to ± limit (V)", minimum=0, maximum=100)),
        "led_response": _chain_switch("each path's measured LED cubic (measured chain, with a calibration)"),
        "sigmoid_offsets": _chain_switch("the measured sigmoid's offsets b, f and linear term g (with a calibration)"),
        "slm_transfer": _chain_switch("each column's and path's measured SLM transfer (with a calibration)"),
        "output_gain": _chain_switch("each detector's and path's output gain η (with a calibration)"),
    },
    "estimate": estimate_schema(),
}


@dataclass(frozen=True)
class ModuleSpec:
    """Geometry of one module (ports x ports weights) and how many modules exist."""

    ports: int
    count: int


@dataclass(frozen=True)
class SlmSpec:
    """SLM grey levels and response curves; ``float_weights`` turns quantisation off."""

    bit_depth: int
    response: tuple[float, float, float]
    response_positive: tuple[float, float, float] | None = None
    response_negative: tuple[float, float, float] | None = None
    float_weights: bool = False

    def response_for(self, path: str) -> tuple[float, float, float]:
        """The response of the 'positive' or 'negative' optical path's SLM."""
        if path not in ("positive", "negative"):
            raise ValueError(f"optical path must be 'positive' or 'negative', got {path!r}")
        specific = self.response_positive if path == "positive" else self.response_negative
        return specific if specific is not None else self.response


@dataclass(frozen=True)
class GainSpec:
    """Per-channel gain after the photodetector: the machine's setting s in [setting_min, setting_max] and
    the normalised β = G·s (G = ``ChainSpec.gain_per_setting``) in [beta_min, beta_max]. A β given
    explicitly wins; the settings are then β/G."""

    per_channel: bool
    setting_min: float | None
    setting_max: float | None
    beta_min: float | None
    beta_max: float | None


@dataclass(frozen=True)
class AlphaSpec:
    """Range of the analog skip fraction α, and whether the program may set a fresh α per phase."""

    min: float
    max: float
    per_phase: bool = False


@dataclass(frozen=True)
class SigmaSpec:
    """The sigmoid driving the LEDs and the range of its programmable input gain."""

    function: str
    gain_min: float
    gain_max: float


@dataclass(frozen=True)
class StateSpec:
    """Voltage rails of a state channel and the clip on injected voltages."""

    voltage_min: float
    voltage_max: float
    injection_clip: float


@dataclass(frozen=True)
class TimingSpec:
    """Loop bandwidth, sampling and readout averaging."""

    bandwidth_hz: float
    sample_rate_hz: float
    loop_iteration_s: float
    readout_window: tuple[float, float]
    repeats: int


@dataclass(frozen=True)
class AocTarget:
    """One AOC machine: module geometry, SLM, gains, α, σ, state rails, timing and switchable non-idealities."""

    kind: str
    name: str
    description: str
    linear_channels: bool
    module: ModuleSpec
    slm: SlmSpec
    gain: GainSpec
    alpha: AlphaSpec
    sigma: SigmaSpec
    state: StateSpec
    timing: TimingSpec
    nonidealities: NonIdealities
    chain: ChainSpec
    loop: LoopSpec = LoopSpec(1e-4)
    estimate: EstimateSpec = EstimateSpec()

    # What shared passes read (issue 11): the backend's module, the kind of solver the loop runs, and
    # the periphery's nonlinearity (the σ driving the LEDs).
    backend: ClassVar[str] = "admc.targets.aoc.target_backend"
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"discrete"})
    default_solver: ClassVar[str] = "implicit-euler"
    # Effects a sweep cannot vary: they act only with a calibration file (``--calibration``).
    calibration_only_effects: ClassVar[tuple[str, ...]] = MEASURED_CHAIN_EFFECTS

    @property
    def activations(self) -> tuple[str, ...]:
        """The σ the program may ask for: the declared function (compensated when the machine's shape differs)
        and, when the description declares the machine's shape, that algebraic sigmoid itself (exact)."""
        shape = self.nonidealities.nonlinearity
        return (self.sigma.function, *((algebraic_sigmoid(shape.exponent),) if shape.enabled else ()))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> AocTarget:
        """Build from a validated description; ``label`` names the file in cross-field errors."""
        target = _resolve_gain(_build(cls, data), label)
        _check_consistency(target, label)
        return target

    def to_dict(self) -> dict:
        """The resolved description as plain data (lists, not tuples)."""
        return _plain(dataclasses.asdict(self))


def _build(cls: type, data: dict) -> typing.Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        value = data[field.name]
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)


def _resolve_gain(target: AocTarget, label: str) -> AocTarget:
    """Fill β from the settings (β = G·s) or the settings from β, so both are always known."""
    gain, per_setting = target.gain, target.chain.gain_per_setting
    values = {}
    for end in ("min", "max"):
        beta, setting = getattr(gain, f"beta_{end}"), getattr(gain, f"setting_{end}")
        if beta is None and setting is None:
            raise AdmcError(f"{label}: field 'gain.setting_{end}': set it (machine units) or gain.beta_{end}")
        if per_setting <= 0:
            raise AdmcError(f"{label}: field 'chain': the chain's gain per unit setting is {per_setting:g}")
        if beta is None:
            beta = setting * per_setting
        values[f"beta_{end}"], values[f"setting_{end}"] = float(beta), float(beta) / per_setting
    return dataclasses.replace(target, gain=dataclasses.replace(gain, **values))


def _plain(value: typing.Any) -> typing.Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_consistency(target: AocTarget, label: str) -> None:
    def fail(path: str, message: str) -> None:
        raise AdmcError(f"{label}: field '{path}': {message}")

    ordered = [
        ("gain.beta_min", target.gain.beta_min, "gain.beta_max", target.gain.beta_max),
        ("alpha.min", target.alpha.min, "alpha.max", target.alpha.max),
        ("sigma.gain_min", target.sigma.gain_min, "sigma.gain_max", target.sigma.gain_max),
        ("state.voltage_min", target.state.voltage_min, "state.voltage_max", target.state.voltage_max),
        ("timing.readout_window[0]", target.timing.readout_window[0],
         "timing.readout_window[1]", target.timing.readout_window[1]),
        ("nonidealities.input_efficiency.minimum", target.nonidealities.input_efficiency.minimum,
         "nonidealities.input_efficiency.maximum", target.nonidealities.input_efficiency.maximum),
        ("nonidealities.saturation.low", target.nonidealities.saturation.low,
         "nonidealities.saturation.high", target.nonidealities.saturation.high),
    ]
    for low_path, low, high_path, high in ordered:
        if low > high:
            fail(low_path, f"{low:g} exceeds {high_path} = {high:g}")
    if target.alpha.max >= 1:
        fail("alpha.max", f"expected a value below 1 (α = 1 freezes the state), got {target.alpha.max:g}")
    if target.gain.beta_max <= 0:
        fail("gain.beta_max", f"expected a positive gain, got {target.gain.beta_max:g}")
    for path in ("response", "response_positive", "response_negative"):
        response = getattr(target.slm, path)
        if response is None:
            continue
        try:
            check_response(response)
        except AdmcError as error:
            fail(f"slm.{path}", str(error))
    for index, channel in enumerate(target.nonidealities.input_efficiency.dead_channels):
        if channel >= target.module.ports:
            fail(f"nonidealities.input_efficiency.dead_channels[{index}]",
                 f"channel {channel} is outside a module of {target.module.ports} ports")
