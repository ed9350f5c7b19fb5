"""Emit an RRAM program: conductance maps (exact arrays and PNG heat maps), periphery tables, DAC waveforms,
routing, and the manifest's ``rram`` section.

Requires: the lowered pieces (placement, routing, crossbar arrays, tiles, DAC waveforms, time scale, voltage
scales, ADC range, level errors). Guarantees: every payload goes through the bundle writer (sha256 listed);
arrays are ``[crossbar, row (input), column (output)]`` in µS; heat maps map [G_min, G_max] onto the viridis
colour map, one PNG per crossbar and side, written by Pillow without timestamps (byte-identical rebuilds).
"""

from __future__ import annotations

import io
import json

import numpy as np
from matplotlib import colormaps
from PIL import Image

from admc.bundle.store import npy_bytes

SIDES = ("positive", "negative")


def _json_bytes(data) -> bytes:
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def heat_map_png(conductance_us: np.ndarray, g_min: float, g_max: float) -> bytes:
    """One crossbar side's conductances as an RGB PNG, [G_min, G_max] mapped onto viridis."""
    normalised = np.clip((conductance_us - g_min) / (g_max - g_min), 0.0, 1.0)
    rgb = (colormaps["viridis"](normalised)[..., :3] * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def summary_of(compiled, placement, arrays, tiles, waveforms, time_scale, adc_range, errors) -> dict:
    target = compiled.target
    size = target.crossbar.size
    grid = compiled.schedule.grid
    used = arrays.tia_gain_ohm[arrays.tia_gain_ohm > 0]
    programmed = 2 * sum(tile["rows"] * tile["columns"] for tile in tiles)
    return {
        "crossbars_used": placement.modules_used,
        "lower_bound": placement.lower_bound,
        "tile_lower_bound": placement.tile_lower_bound,
        "layout": placement.layout,
        "placement_solver": placement.solver,
        "devices_programmed": programmed,
        "devices_on_used_crossbars": 2 * placement.modules_used * size * size,
        "physical_time_per_sample_s": time_scale.seconds_per_unit * float(grid[-1] - grid[0]),
        "seconds_per_unit_model_time": time_scale.seconds_per_unit,
        "integrator_time_constant_s": time_scale.seconds_per_unit,
        "layer_time_constant_s": time_scale.layer_time_constant_s,
        "layers_in_series": time_scale.layers_in_series,
        "state_rate_per_unit_time": time_scale.rate,
        "settling_margin": time_scale.margin,
        "time_scale_note": time_scale.clamped,
        "dac_samples": int(waveforms.codes.shape[0]),
        "dac_channels": int(waveforms.channels.size),
        "adc_range": adc_range,
        "adc_step": 2 * adc_range / (2 ** target.periphery.adc_bits - 1),
        "tia_gain_range_used_ohm": [float(np.min(used, initial=np.inf)) if used.size else 0.0,
                                    float(np.max(used, initial=0.0))],
        "conductance_range_us": [float(min(arrays.positive_us.min(), arrays.negative_us.min())),
                                 float(max(arrays.positive_us.max(), arrays.negative_us.max()))],
        "levels": None if target.conductance.float_levels else target.conductance.levels,
        "worst_weight_error_levels": max((entry["max_error_levels"] for entry in errors), default=0.0),
    }


def summary_lines(summary: dict, report: dict) -> list[str]:
    levels = "float conductances" if summary["levels"] is None else f"{summary['levels']} levels"
    lines = [
        f"crossbars   {summary['crossbars_used']} used ({summary['layout']}, {summary['placement_solver']}); lower "
        f"bound {summary['lower_bound']}, tiling bound {summary['tile_lower_bound']}",
        f"devices     {summary['devices_programmed']} programmed of {summary['devices_on_used_crossbars']} on the "
        f"used crossbars ({levels}, G in [{summary['conductance_range_us'][0]:.4g}, "
        f"{summary['conductance_range_us'][1]:.4g}] µS); worst weight error {summary['worst_weight_error_levels']:.3f}"
        " level",
        f"time        {summary['physical_time_per_sample_s'] * 1e6:.4g} µs per sample "
        f"({summary['seconds_per_unit_model_time'] * 1e6:.4g} µs per unit model time = integrator R·C); layers "
        f"settle {summary['settling_margin']:.3g}× faster than the state moves ({summary['layers_in_series']} in "
        f"series, τ {summary['layer_time_constant_s'] * 1e9:.3g} ns each, state rate "
        f"{summary['state_rate_per_unit_time']:.3g}/unit time)",
        f"converters  DAC {summary['dac_samples']} samples × {summary['dac_channels']} channels; ADC ±"
        f"{summary['adc_range']:.4g} (step {summary['adc_step']:.3g}); TIA "
        f"{summary['tia_gain_range_used_ohm'][0]:.3g}–{summary['tia_gain_range_used_ohm'][1]:.3g} Ω",
    ]
    if "quantisation_nrmse" in report:
        lines.append(f"verify      per-step NRMSE bound {report['verify_tolerance']:.3g} from half a level per layer "
                     f"(quantisation caused {report['quantisation_nrmse']:.3g} on calibration noise)")
    if summary["time_scale_note"]:
        lines.append(f"note: time scale {summary['time_scale_note']}")
    return lines


def attach_rram_program(compiled, intended, realised, report, placement, routing, arrays, tiles, waveforms,
                        time_scale, volts, adc_range, errors, calibration):
    target = compiled.target
    payloads: dict[str, bytes] = {
        "rram/conductance_positive_us.npy": npy_bytes(arrays.positive_us),
        "rram/conductance_negative_us.npy": npy_bytes(arrays.negative_us),
        "rram/column_scale.npy": npy_bytes(arrays.column_scale),
        "rram/tia_gain_ohm.npy": npy_bytes(arrays.tia_gain_ohm),
        "rram/dac_times.npy": npy_bytes(waveforms.table.times),
        "rram/dac_channels.npy": npy_bytes(waveforms.channels.astype(np.int64)),
        "rram/dac_full_scale.npy": npy_bytes(waveforms.full_scale),
        "rram/dac_codes.npy": npy_bytes(waveforms.codes),
        "rram/routing.json": routing.data,
    }
    if arrays.positive_levels is not None:
        payloads["rram/levels_positive.npy"] = npy_bytes(arrays.positive_levels)
        payloads["rram/levels_negative.npy"] = npy_bytes(arrays.negative_levels)
    for crossbar in range(placement.modules_used):
        for side, values in zip(SIDES, (arrays.positive_us, arrays.negative_us), strict=True):
            payloads[f"rram/maps/crossbar_{crossbar:04d}_{side}.png"] = heat_map_png(
                values[crossbar], target.conductance.g_min_us, target.conductance.g_max_us)
    summary = summary_of(compiled, placement, arrays, tiles, waveforms, time_scale, adc_range, errors)
    summary["lines"] = summary_lines(summary, report)
    periphery = [{"group": group.name, "activation": group.activation, "volts_per_unit": volts[group.name],
                  "full_scale": max(calibration.input_peaks.get(group.name, 0.0),
                                    calibration.output_peaks.get(group.name, 0.0))}
                 for group in intended.groups]
    section = {
        "orientation": "arrays[crossbar, row, column]: row = input (driven voltage), column = output (current "
                       "into the column's transimpedance amplifier); weight = column_scale · (G⁺ − G⁻), µS",
        "conductance": {side: f"rram/conductance_{side}_us.npy" for side in SIDES},
        "levels": None if arrays.positive_levels is None else {side: f"rram/levels_{side}.npy" for side in SIDES},
        "column_scale": "rram/column_scale.npy",
        "tia_gain_ohm": "rram/tia_gain_ohm.npy",
        "dac": {"times": "rram/dac_times.npy", "channels": "rram/dac_channels.npy",
                "full_scale": "rram/dac_full_scale.npy", "codes": "rram/dac_codes.npy",
                "bits": target.periphery.dac_bits, "rate_hz": target.periphery.dac_rate_hz},
        "adc": {"bits": target.periphery.adc_bits, "range": adc_range},
        "routing": "rram/routing.json",
        "tiles": tiles,
        "placement": placement.summary(),
        "periphery": periphery,
        "timing": time_scale.to_dict(),
        "weight_error": errors,
        "summary": summary,
    }
    report["crossbars_used"] = placement.modules_used
    compiled.program = intended
    compiled.report = report
    compiled.extra_sections = {"rram": section}
    compiled.extra_payloads = payloads
    compiled.block_arrays = False
    compiled.realised_program = realised
    return compiled
