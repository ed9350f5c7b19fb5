"""Description fields every hardware target shares for ``admc estimate``: time and energy figures.

Requires: nothing. Guarantees: :class:`EstimateSpec` is the ``estimate`` section (a model of
``admc.targets.description_models``) and ``ESTIMATE_FIELDS`` the table ``admc estimate`` prints, read from it;
every figure ``admc estimate`` uses that is not already another field of the description (the loop iteration
time, the repeats) is one of these fields, so a target override (``inherits:`` + ``estimate:``) changes it and
the estimate prints it. Every field is nullable (default null): descriptions and bundles written before these
fields existed stay valid, and ``admc estimate`` refuses a description that lacks a figure it needs, naming
the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from admc.targets.description_models import Section, leaf_of


def figure(unit: str, doc: str) -> Any:
    """A nullable figure in ``unit`` (default null)."""
    return Field(None, description=doc, ge=0, le=1e18, json_schema_extra={"unit": unit})


class EstimateSpec(Section):
    """Time and energy figures of a target for ``admc estimate`` (None: not given)."""

    phase_window_s: float | None = figure(
        "s", "fixed time the machine's control gives each closed phase (the prototype's acquisition window); the "
        "estimate reports it beside the convergence-limited time")
    injection_update_s: float | None = figure("s", "time to update the injected voltages (DACs) at the start of a "
                                              "phase")
    readout_transfer_s: float | None = figure("s", "time to move a readout to the host and compute the next "
                                              "injection")
    adc_samples_per_readout: int | None = figure("samples", "conversions per read channel per readout (window "
                                                 "averaging)")
    analog_operation_energy_j: float | None = figure(
        "J", "energy of one analog multiply-accumulate (one weight, one loop iteration or one layer time constant)")
    module_static_power_w: float | None = figure("W", "static power of one module (crossbar) while the program runs")
    adc_conversion_energy_j: float | None = figure("J", "energy of one analog-to-digital conversion")
    dac_conversion_energy_j: float | None = figure("J", "energy of one digital-to-analog conversion")
    host_energy_per_flop_j: float | None = figure(
        "J", "energy of one FLOP of the host's digital work (injection, conditioning, readout averaging)")
    baseline_device: str | None = Field(None, description="the digital baseline's processor class (named)",
                                        json_schema_extra={"unit": ""})
    baseline_energy_per_flop_j: float | None = figure("J", "the digital baseline's energy per FLOP")
    baseline_flops_per_s: float | None = figure("FLOP/s", "the digital baseline's throughput")
    baseline_evaluation_latency_s: float | None = figure(
        "s", "the digital baseline's shortest time for one network evaluation (kernel launches at batch 1)")
    baseline_power_w: float | None = figure("W", "the digital baseline's power while it runs one sample at batch 1")


# field name -> (type, unit, doc), in declaration order: what ``admc estimate`` prints beside each figure.
ESTIMATE_FIELDS: dict[str, tuple[str, str, str]] = {
    name: (leaf_of(info).type, info.json_schema_extra["unit"], info.description)
    for name, info in EstimateSpec.model_fields.items()
}
