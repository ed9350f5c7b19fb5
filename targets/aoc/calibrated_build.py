"""The AOC lowering for one measured machine (``admc build --calibration FILE``).

Requires: a ``CompiledProgram`` from the spine for an AOC target with per-channel gains and quantised SLMs,
and a ``Calibration`` of the makers' format. Guarantees: placement avoids the machine's dead ports; α comes
from the α pass (``alpha_in_range``) with each weight divided by the reach of its pixel on this machine (what
the range of the gain setting can realise there) as the demand its floor must meet; each channel's σ·LED light
is matched to tanh over the voltages the ideal program drives it with (``operating_point``: a shift injected
on hidden channels, a light scale per path in the grey levels, a rest light in the cancelling injection); grey
levels, gains and cancelling injections come from ``compensation.compensate``; the bundle records the
calibration's sha256, what was compensated and the remainder under the manifest's top-level ``calibration``
key, and the realised (effective) normalised transmissions beside the grey levels, so the ideal executor runs
what this machine realises.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from admc.bundle.store import npy_bytes
from admc.core.errors import AdmcError
from admc.ir.adm import is_activation
from admc.targets.aoc.backend import (
    ImageSet,
    alpha_in_range,
    gain_floors,
    gains_and_transmissions,
    place,
    realised_blocks,
    scale_states,
    weight_errors,
)
from admc.targets.aoc.calibration import Calibration
from admc.targets.aoc.chain import measured_chain
from admc.targets.aoc.channel_gains import TileRows
from admc.targets.aoc.compensation import RANGE_MARGIN, PortLight, compensate, small_signal
from admc.targets.aoc.emit import attach_aoc_program
from admc.targets.aoc.operating_point import (
    RECORD_SAMPLES,
    RECORD_SEED,
    OperatingPoints,
    fit_operating_points,
    record_states,
)

# Share of a pixel's reach left for the weights once leaks and the spill pre-compensation are paid for.
REACH_SHARE = 0.9
ALPHA_ROUNDS = 4

def pixel_reach(machine, target) -> dict[str, np.ndarray]:
    """Largest normalised transmission each pixel [output port, input port] reaches on each path."""
    nominal = target.chain
    unit = nominal.slm_full_scale * nominal.input_efficiency * nominal.output_gain * nominal.loop_gain
    slope = small_signal(machine, nominal)
    return {path: machine.kappa[:, None] * machine.output_gain[path][:, None] * machine.efficiency[path][None, :]
            * slope[path] * machine.transfer[path][:, :2].sum(axis=1)[:, None] / unit
            for path in ("positive", "negative")}


def channel_operating_points(compiled, scaled, machine) -> OperatingPoints:
    """Each channel's least-squares operating point over the voltages the ideal program drives it with.

    The states are recorded on the unscaled program (with a conditional program's conditioning drive) and
    multiplied by each group's voltage scale: ``scale_states`` is exact, so these are the scaled voltages."""
    from admc.compiler.conditional_build import calibration_drive

    sigma_gain, tanh, shiftable = np.ones(scaled.size), np.zeros(scaled.size, bool), np.zeros(scaled.size, bool)
    voltage_scale = np.ones(scaled.size)
    for group in scaled.groups:
        channels = slice(group.offset, group.stop)
        sigma_gain[channels], voltage_scale[channels] = group.sigma_gain, group.voltage_scale
        tanh[channels] = is_activation(group.activation)  # tanh, or the machine's own sigmoid
        # A state or read-out channel's voltage is the answer (and held ones are driven): never offset.
        shiftable[channels] = group.role == "hidden" and not group.held
    states = record_states(compiled.program, compiled.schedule, compiled.alpha,
                           extra_drive=calibration_drive(compiled, samples=RECORD_SAMPLES, seed=RECORD_SEED))
    activations = [group.activation for group in scaled.groups for _ in range(group.size)]
    return fit_operating_points(states * voltage_scale, sigma_gain, tanh, shiftable, machine, activations)


def input_port_channels(scaled, placement, ports: int) -> np.ndarray:
    """[M, P] the state channel each input port's LED is driven by (−1: unused)."""
    result = np.full((placement.modules_used, ports), -1, dtype=np.int64)
    for tile in placement.tiles:
        block = scaled.blocks[int(tile.block.split("_")[1])]
        offset = scaled.group(block.column_group).offset
        width = tile.column_stop - tile.column_start
        result[tile.module, tile.input_port_start:tile.input_port_start + width] = (
            offset + np.arange(tile.column_start, tile.column_stop))
    return result


def port_light(points: OperatingPoints, port_channels: np.ndarray, nominal, machine) -> PortLight:
    """The fitted light model of every used input port (the small-signal one elsewhere)."""
    default = small_signal(machine, nominal)
    used = port_channels >= 0
    safe = np.where(used, port_channels, 0)
    slope = {path: np.where(used, points.scale[path][safe] / nominal.light_per_sigma, default[path])
             for path in ("positive", "negative")}
    rest = {path: np.where(used, points.rest[path][safe], points.rest[path][0] if points.rest[path].size else 0.0)
            for path in ("positive", "negative")}
    return PortLight(slope, rest)


def operating_point_report(points: OperatingPoints) -> dict:
    fitted = np.flatnonzero(points.fitted)
    before = float(np.sqrt(np.mean(points.error_before[fitted] ** 2))) if fitted.size else 0.0
    after = float(np.sqrt(np.mean(points.error_after[fitted] ** 2))) if fitted.size else 0.0
    return {
        "meaning": "per channel, least squares over the voltages the ideal program drives σ with "
                   f"({RECORD_SAMPLES} noise samples, seed {RECORD_SEED}): light ≈ rest + scale·σ(σ-gain·z) (σ the "
                   "channel's own: tanh, or the machine's algebraic sigmoid for a model trained with it) for "
                   "the machine's S and LED curves at z + shift; scale and rest set the grey levels and the "
                   "cancelling injection, the shift is injected (hidden channels only)",
        "shift": "aoc/calibration/operating_shift.npy",
        "scale": "aoc/calibration/operating_scale.npy",
        "rest": "aoc/calibration/operating_rest.npy",
        "layout": "per state channel; scale and rest rows: positive, negative path (raw light)",
        "channels_fitted": int(fitted.size),
        "channels_shifted": int(np.count_nonzero(points.shift)),
        "largest_shift_volts": float(np.max(np.abs(points.shift), initial=0.0)),
        "sigma_error_small_signal": before,
        "sigma_error_fitted": after,
    }


def lower_measured(compiled, layout: str, calibration: Calibration):
    target = compiled.target
    if not target.gain.per_channel:
        raise AdmcError(f"--calibration {calibration.path}: target {target.name} has no per-channel gains; "
                        "compensation needs them")
    if target.slm.float_weights:
        raise AdmcError(f"--calibration {calibration.path}: target {target.name} has float weights (no SLM)")
    machine = measured_chain(calibration, target.module.ports)
    scaled, headroom = scale_states(compiled, target)
    placement, routing, tile_rows = place(scaled, target, layout, machine)
    reach = pixel_reach(machine, target)
    points = channel_operating_points(compiled, scaled, machine)
    lights = port_light(points, input_port_channels(scaled, placement, target.module.ports), target.chain, machine)
    demanded = []
    for tile, rows in zip(placement.tiles, tile_rows, strict=True):
        window = (slice(tile.output_port_start, tile.output_port_stop),
                  slice(tile.input_port_start, tile.input_port_stop))
        available = np.where(rows.weights >= 0, reach["positive"][window], reach["negative"][window])
        demanded.append(TileRows(rows.block_name, rows.row_offset_in_block,
                                 rows.weights / np.maximum(available * REACH_SHARE * RANGE_MARGIN, 1e-300),
                                 rows.channels))
    # The α pass with the range of this machine's pixels (min mode: choose_alpha's floor, as before).
    alpha = alpha_in_range(compiled, scaled, demanded, target)
    floors = gain_floors(scaled, placement, compiled.schedule, target)
    floor_ports = np.zeros((placement.modules_used, target.module.ports))
    for tile, floor in zip(placement.tiles, floors, strict=True):
        floor_ports[tile.module, tile.output_port_start:tile.output_port_stop] = floor
    for _ in range(ALPHA_ROUNDS):
        beta, transmissions = gains_and_transmissions(placement, tile_rows, alpha, target, floors)
        result = compensate(placement, transmissions, beta, floor_ports, target, machine, lights)
        # A row the gain range cannot serve (spill pre-compensation can need more than the pixel's reach)
        # gets the α that scales its demand into range, as choose_alpha would; the rest is the remainder.
        raised = alpha.copy()
        for tile, rows in zip(placement.tiles, tile_rows, strict=True):
            row_excess = result.excess[tile.module, tile.output_port_start:tile.output_port_stop]
            wanted = 1.0 - (1.0 - alpha[rows.channels]) / np.maximum(row_excess / RANGE_MARGIN, 1.0)
            np.maximum.at(raised, rows.channels, np.minimum(wanted, target.alpha.max))
        if np.allclose(raised, alpha, rtol=0, atol=1e-12):
            break
        alpha = raised
    # The operating-point shift: state z + δ on the machine means (1 − α) δ more drive (the relaxation's share),
    # added once per channel on the first output port that writes it.
    shifted_ports = set()
    for tile, rows in zip(placement.tiles, tile_rows, strict=True):
        for index, channel in enumerate(rows.channels):
            if channel in shifted_ports or points.shift[channel] == 0.0:
                continue
            shifted_ports.add(channel)
            result.cancel_fixed[tile.module, tile.output_port_start + index] += (
                (1.0 - alpha[channel]) * points.shift[channel])
    image_set = ImageSet(None, result.grey, result.effective, effective=True)
    achieved = realised_blocks(scaled, placement, image_set, result.beta, alpha)
    errors = weight_errors(scaled, achieved, None)
    realised = replace(scaled, blocks=[replace(block, matrix=matrix)
                                       for block, matrix in zip(scaled.blocks, achieved, strict=True)])
    compiled = attach_aoc_program(compiled, scaled, alpha, placement, routing, result.beta, [image_set], headroom,
                                  errors, realised)
    compiled.extra_payloads["aoc/calibration/cancel_fixed.npy"] = npy_bytes(result.cancel_fixed)
    compiled.extra_payloads["aoc/calibration/cancel_per_factor.npy"] = npy_bytes(result.cancel_per_factor)
    compiled.extra_payloads["aoc/calibration/operating_shift.npy"] = npy_bytes(points.shift)
    compiled.extra_payloads["aoc/calibration/operating_scale.npy"] = npy_bytes(
        np.stack([points.scale["positive"], points.scale["negative"]]))
    compiled.extra_payloads["aoc/calibration/operating_rest.npy"] = npy_bytes(
        np.stack([points.rest["positive"], points.rest["negative"]]))
    compiled.extra_sections["calibration"] = {
        "file": Path(calibration.path).name,
        "sha256": calibration.sha256,
        "channels": calibration.channels,
        "dead_input_ports": machine.dead_input_ports,
        "dead_output_ports": machine.dead_output_ports,
        "cancellation": {"fixed": "aoc/calibration/cancel_fixed.npy",
                         "per_factor": "aoc/calibration/cancel_per_factor.npy",
                         "meaning": "volts added to each output port's injection: fixed + the port's run-time "
                                    "gain factor × per_factor"},
        **result.report,
        "operating_points": operating_point_report(points),
    }
    summary = compiled.extra_sections["aoc"]["summary"]
    summary["lines"].append(f"calibration {Path(calibration.path).name} (sha256 {calibration.sha256[:12]}…): "
                            f"dead input ports {machine.dead_input_ports or 'none'}; clipped pixels "
                            f"{result.report['remainder']['clipped_pixels']}, rows at the gain limit "
                            f"{result.report['remainder']['rows_at_setting_max']}")
    return compiled
