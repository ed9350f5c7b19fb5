"""Text of ``admc estimate``: the estimate, itemised, with every assumption and the paper comparison.

Requires: a dict from ``admc.estimate.cost.estimate``. Guarantees: one line per assumption (field, value, unit),
per latency and energy item, the digital baseline and the ratios; pure (returns the text).
"""

from __future__ import annotations


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} s"


def _joules(value: float) -> str:
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(value) >= scale or unit == "pJ":
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} J"


def describe(result: dict) -> str:
    program = result["program"]
    counts = result["counts"]
    lines = [
        f"estimate    {result['bundle']} on {result['target']}: {program['solver']}, {program['steps']} steps, "
        f"{program['state_channels']} state channels, {program['weights']} weights, {program['modules']} module(s)",
        f"model       {result['model']}",
    ]
    if result.get("iteration_source"):
        lines.append(f"iterations  {result['iteration_source']}: {counts['loop_iterations']} loop iterations per "
                     f"sample ({counts['closed_loop_iterations_per_run']} in closed phases per run, "
                     f"{counts['repeats']} run(s))")
    lines.append(f"counts      {counts['analog_operations']:.4g} analog operations, {counts['adc_conversions']} ADC "
                 f"and {counts['dac_conversions']} DAC conversions, {counts['host_flops']} host FLOPs per sample")
    lines.append(f"latency     {_seconds(result['latency_s'])} per sample")
    for name, value in result["latency_items_s"].items():
        lines.append(f"  {name.replace('_', ' '):<22} {_seconds(value)}")
    if result.get("latency_fixed_window_s") is not None:
        lines.append(f"  with the fixed window  {_seconds(result['latency_fixed_window_s'])} per sample "
                     "(closed phases held for estimate.phase_window_s, as the prototype runs)")
    lines.append(f"energy      {_joules(result['energy_j'])} per sample")
    for name, value in result["energy_items_j"].items():
        share = 100 * value / result["energy_j"] if result["energy_j"] else 0.0
        lines.append(f"  {name.replace('_', ' '):<22} {_joules(value):>12}  {share:5.1f} %")
    baseline = result["baseline"]
    lines.append(f"baseline    {baseline['device']}: {baseline['solver']}, {baseline['evaluations']} evaluations × "
                 f"{baseline['flops_per_evaluation']} FLOPs: {_joules(baseline['energy_j'])} at peak FLOP "
                 f"efficiency, {_joules(baseline['energy_batch1_j'])} at batch 1 (power × latency), "
                 f"{_seconds(baseline['latency_s'])} per sample")
    gain = result["gain"]
    lines.append(f"ratio       baseline / analog: energy {gain['energy']:.3g}× (peak) to {gain['energy_batch1']:.3g}× "
                 f"(batch 1), latency {gain['latency']:.3g}×")
    lines.append("assumptions (target description fields):")
    for entry in result["assumptions"]:
        value = "null (not used)" if entry["value"] is None else f"{entry['value']}"
        unit = f" {entry['unit']}" if entry["unit"] and entry["value"] is not None else ""
        lines.append(f"  {entry['field']:<40} {value}{unit}  — {entry['doc']}")
    lines.extend(result["paper"])
    return "\n".join(lines)
