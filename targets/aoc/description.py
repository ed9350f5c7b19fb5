"""The analog optical computer (AOC) target description: one frozen pydantic model.

Requires: nothing. Guarantees: :class:`AocTarget` is the description's one declaration
(``admc.targets.description_models``; its ``nonidealities`` section in ``description_nonidealities``);
:meth:`AocTarget.from_mapping` validates a complete description and adds the cross-field checks a field
cannot express (ranges that must be ordered, a monotone SLM response, dead channels inside the module),
raising AdmcError naming the file and field; ``to_dict()`` returns the resolved description as plain
JSON-able data, and ``from_mapping(to_dict())`` rebuilds an equal target.

The section and field names of ``nonidealities`` are read by the digital twin; change them only together.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from admc.core.errors import AdmcError
from admc.ir.adm import algebraic_sigmoid
from admc.targets.aoc.chain import ChainSpec
from admc.targets.aoc.description_nonidealities import NonIdealitiesSection
from admc.targets.aoc.nonidealities import MEASURED_CHAIN_EFFECTS
from admc.targets.aoc.slm import check_response
from admc.targets.description_models import Section, leaf, numbers, section
from admc.targets.description_schema import validate
from admc.targets.estimate_spec import EstimateSpec
from admc.targets.loop_spec import ALPHA_PER_PHASE_DOC, loop_spec


class AocLoop(loop_spec(settle_tolerance=1e-4)):
    """The optical loop counts as settled at a relative change of 1e-4 per iteration unless the file says."""


class ModuleSpec(Section):
    """Geometry of one module (ports x ports weights) and how many modules exist."""

    ports: int = leaf("inputs = outputs of one module (weight array is ports x ports)", minimum=1, maximum=4096)
    count: int = leaf("modules available", minimum=1, maximum=1_000_000)


class SlmSpec(Section):
    """SLM grey levels and response curves; ``float_weights`` turns quantisation off."""

    bit_depth: int = leaf("grey-level bits of the SLM", minimum=1, maximum=16)
    response: numbers(-10, 10) = leaf("transmission a u^2 + b u + c at drive u in [0, 1], [a, b, c]", length=3)
    response_positive: numbers(-10, 10) | None = leaf("response of the positive path's SLM (null: use response)",
                                                      None, length=3)
    response_negative: numbers(-10, 10) | None = leaf("response of the negative path's SLM (null: use response)",
                                                      None, length=3)
    float_weights: bool = leaf("true: no quantisation (exact weights, for tests)", False)

    def response_for(self, path: str) -> tuple[float, float, float]:
        """The response of the 'positive' or 'negative' optical path's SLM."""
        if path not in ("positive", "negative"):
            raise ValueError(f"optical path must be 'positive' or 'negative', got {path!r}")
        specific = self.response_positive if path == "positive" else self.response_negative
        return specific if specific is not None else self.response


class GainSpec(Section):
    """Per-channel gain after the photodetector: the machine's setting s in [setting_min, setting_max] and
    the normalised β = G·s (G = ``ChainSpec.gain_per_setting``) in [beta_min, beta_max]. A β given
    explicitly wins; the settings are then β/G (:meth:`AocTarget.from_mapping` fills both)."""

    per_channel: bool = leaf("whether each output channel has its own gain β_i")
    setting_min: float | None = leaf("smallest gain setting of the machine (the makers' beta, machine units)", None,
                                     minimum=0, maximum=1e9)
    setting_max: float | None = leaf("largest gain setting of the machine (machine units)", None, minimum=0,
                                     maximum=1e9)
    beta_min: float | None = leaf("smallest normalised channel gain (null: chain gain × setting_min)", None,
                                  minimum=0, maximum=1e6)
    beta_max: float | None = leaf("largest normalised channel gain (null: chain gain × setting_max)", None,
                                  minimum=0, maximum=1e6)


class ChainFigures(Section):
    """Nominal chain figures of the machine (its preset cites each); ``AocTarget.chain`` is their ChainSpec."""

    sigmoid: numbers(-1e3, 1e3) = leaf("measured sigmoid S(z) = d s(a z + b) + f + g z, [a, b, c, d, f, g]",
                                       (1.0, 0.0, 2.0, 1.0, 0.0, 0.0), length=6)
    led_positive: numbers(-1e3, 1e3) = leaf("LED light of the positive path, cubic in t (descending powers)",
                                            (0.0, 0.0, 1.0, 0.0), length=4)
    led_negative: numbers(-1e3, 1e3) = leaf("LED light of the negative path, cubic in t (descending powers)",
                                            (0.0, 0.0, 1.0, 0.0), length=4)
    slm_full_scale: float = leaf("nominal SLM modulation a + b", 1.0, minimum=0, maximum=1e3)
    input_efficiency: float = leaf("nominal fan-in efficiency ρ", 1.0, minimum=0, maximum=1e3)
    output_gain: float = leaf("nominal detector output gain η", 1.0, minimum=0, maximum=1e3)
    loop_gain: float = leaf("nominal closed-loop gain κ", 1.0, minimum=0, maximum=1e3)
    gain_divisor: float = leaf("N of the machine's gain s/N", 1.0, minimum=1e-9, maximum=1e9)


class AlphaSpec(Section):
    """Range of the analog skip fraction α, and whether the program may set a fresh α per phase."""

    min: float = leaf("smallest analog skip fraction α", minimum=0, maximum=1)
    max: float = leaf("largest analog skip fraction α (< 1)", minimum=0, maximum=1)
    per_phase: bool = leaf(ALPHA_PER_PHASE_DOC, False)


class SigmaSpec(Section):
    """The sigmoid driving the LEDs and the range of its programmable input gain."""

    function: Literal["tanh"] = leaf("nonlinearity driving the LEDs")
    gain_min: float = leaf("smallest programmable σ input gain", minimum=1e-6, maximum=1e3)
    gain_max: float = leaf("largest programmable σ input gain", minimum=0, maximum=1e3)


class StateSpec(Section):
    """Voltage rails of a state channel and the clip on injected voltages."""

    voltage_min: float = leaf("lower saturation rail of a state channel (V)", minimum=-100, maximum=100)
    voltage_max: float = leaf("upper saturation rail of a state channel (V)", minimum=-100, maximum=100)
    injection_clip: float = leaf("injected voltages are clipped to ± this (V)", minimum=0, maximum=100)


class TimingSpec(Section):
    """Loop bandwidth, sampling and readout averaging."""

    bandwidth_hz: float = leaf("-3 dB bandwidth of the loop", minimum=0, maximum=1e12)
    sample_rate_hz: float = leaf("waveform sample rate", minimum=0, maximum=1e12)
    loop_iteration_s: float = leaf("time of one loop iteration (time constant τ)", minimum=0, maximum=1)
    readout_window: numbers(0, 1) = leaf("fraction [start, end] of the solve averaged at readout", length=2)
    repeats: int = leaf("repeats averaged per readout", minimum=1, maximum=1_000_000)


class AocTarget(Section):
    """One AOC machine: module geometry, SLM, gains, α, σ, state rails, timing and switchable non-idealities."""

    kind: Literal["aoc"] = leaf("target kind")
    name: str = leaf("target name")
    description: str = leaf("one line for reports", "")
    linear_channels: bool = leaf(
        "whether channels may skip the sigmoid (false on the AOC: every LED is driven through σ)")
    module: ModuleSpec = section()
    slm: SlmSpec = section()
    gain: GainSpec = section()
    chain_figures: ChainFigures = section("chain")
    alpha: AlphaSpec = section()
    loop: AocLoop = section()
    sigma: SigmaSpec = section()
    state: StateSpec = section()
    timing: TimingSpec = section()
    nonidealities: NonIdealitiesSection = section()
    estimate: EstimateSpec = section()

    # What shared passes read (issue 11): the backend's module, the kind of solver the loop runs, and
    # the periphery's nonlinearity (the σ driving the LEDs).
    backend: ClassVar[str] = "admc.targets.aoc.target_backend"
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"discrete"})
    default_solver: ClassVar[str] = "implicit-euler"
    # Effects a sweep cannot vary: they act only with a calibration file (``--calibration``).
    calibration_only_effects: ClassVar[tuple[str, ...]] = MEASURED_CHAIN_EFFECTS
    presets: ClassVar[dict[str, str | None]] = {"aoc-48": "presets/aoc-48.yaml", "aoc-16": "presets/aoc-16.yaml"}
    aliases: ClassVar[dict[str, str]] = {"aoc": "aoc-48"}

    @property
    def chain(self) -> ChainSpec:
        """The nominal optical chain (the figures of the ``chain`` section)."""
        return ChainSpec(**dict(self.chain_figures))

    @property
    def activations(self) -> tuple[str, ...]:
        """The σ the program may ask for: the declared function (compensated when the machine's shape differs)
        and, when the description declares the machine's shape, that algebraic sigmoid itself (exact)."""
        shape = self.nonidealities.nonlinearity
        return (self.sigma.function, *((algebraic_sigmoid(shape.exponent),) if shape.enabled else ()))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> AocTarget:
        """Validate a complete description; ``label`` names the file in errors."""
        target = _resolve_gain(validate(data, cls, label), label)
        _check_consistency(target, label)
        return target

    def to_dict(self) -> dict:
        """The resolved description as plain data, in the YAML's field names (lists, not tuples)."""
        return self.model_dump(by_alias=True)


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
    return target.model_copy(update={"gain": gain.model_copy(update=values)})


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
