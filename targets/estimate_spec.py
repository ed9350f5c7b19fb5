"""Description fields every hardware target shares for ``admc estimate``: time and energy figures.

Requires: nothing. Guarantees: ``ESTIMATE_SCHEMA`` is a schema section (``admc.targets.description_schema``)
and ``EstimateSpec`` its frozen dataclass; every figure ``admc estimate`` uses that is not already another
field of the description (the loop iteration time, the repeats) is one of these fields, so a target override
(``inherits:`` + ``estimate:``) changes it and the estimate prints it. Every field is nullable (default null):
descriptions and bundles written before these fields existed stay valid, and ``admc estimate`` refuses a
description that lacks a figure it needs, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from admc.targets.description_schema import Field

# field name -> (type, unit, doc); the one table the schema, the dataclass check and the printout read.
ESTIMATE_FIELDS: dict[str, tuple[str, str, str]] = {
    "phase_window_s": ("float", "s", "fixed time the machine's control gives each closed phase (the prototype's "
                       "acquisition window); the estimate reports it beside the convergence-limited time"),
    "injection_update_s": ("float", "s", "time to update the injected voltages (DACs) at the start of a phase"),
    "readout_transfer_s": ("float", "s", "time to move a readout to the host and compute the next injection"),
    "adc_samples_per_readout": ("int", "samples", "conversions per read channel per readout (window averaging)"),
    "analog_operation_energy_j": ("float", "J", "energy of one analog multiply-accumulate (one weight, one loop "
                                  "iteration or one layer time constant)"),
    "module_static_power_w": ("float", "W", "static power of one module (crossbar) while the program runs"),
    "adc_conversion_energy_j": ("float", "J", "energy of one analog-to-digital conversion"),
    "dac_conversion_energy_j": ("float", "J", "energy of one digital-to-analog conversion"),
    "host_energy_per_flop_j": ("float", "J", "energy of one FLOP of the host's digital work (injection, "
                               "conditioning, readout averaging)"),
    "baseline_device": ("str", "", "the digital baseline's processor class (named)"),
    "baseline_energy_per_flop_j": ("float", "J", "the digital baseline's energy per FLOP"),
    "baseline_flops_per_s": ("float", "FLOP/s", "the digital baseline's throughput"),
    "baseline_evaluation_latency_s": ("float", "s", "the digital baseline's shortest time for one network "
                                      "evaluation (kernel launches at batch 1)"),
    "baseline_power_w": ("float", "W", "the digital baseline's power while it runs one sample at batch 1"),
}


def estimate_schema() -> dict:
    """The ``estimate`` section of a target description (every figure nullable, default null)."""
    section = {}
    for name, (kind, unit, doc) in ESTIMATE_FIELDS.items():
        text = f"{doc} ({unit})" if unit else doc
        if kind == "str":
            section[name] = Field("str", text, default=None, nullable=True)
        else:
            section[name] = Field(kind, text, default=None, minimum=0, maximum=1e18, nullable=True)
    return section


@dataclass(frozen=True)
class EstimateSpec:
    """Time and energy figures of a target for ``admc estimate`` (None: not given)."""

    phase_window_s: float | None = None
    injection_update_s: float | None = None
    readout_transfer_s: float | None = None
    adc_samples_per_readout: int | None = None
    analog_operation_energy_j: float | None = None
    module_static_power_w: float | None = None
    adc_conversion_energy_j: float | None = None
    dac_conversion_energy_j: float | None = None
    host_energy_per_flop_j: float | None = None
    baseline_device: str | None = None
    baseline_energy_per_flop_j: float | None = None
    baseline_flops_per_s: float | None = None
    baseline_evaluation_latency_s: float | None = None
    baseline_power_w: float | None = None


if [field.name for field in fields(EstimateSpec)] != list(ESTIMATE_FIELDS):
    raise RuntimeError("EstimateSpec and ESTIMATE_FIELDS name different fields")
