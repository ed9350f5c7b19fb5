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
what this machine realises. The lowering is a sequence of named passes over a :class:`CalibratedLowering`
(the nominal lowering's state and, where they are the same, its passes: ``lowering.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from admc.bundle.store import npy_bytes
from admc.core.errors import AdmcError
from admc.ir.adm import is_activation
from admc.ir.program import block_indices
from admc.passes.manager import NOT_IR, BackendPass, Lowering
from admc.targets.aoc.backend import ImageSet, gains_and_transmissions, place, realised_blocks, weight_errors
from admc.targets.aoc.calibration import Calibration
from admc.targets.aoc.chain import measured_chain
from admc.targets.aoc.channel_gains import TileRows
from admc.targets.aoc.compensation import REACH_TOLERANCE, PortLight, compensate, small_signal, zero_state_light
from admc.targets.aoc.lowering import (
    GAIN_FLOORS,
    ROUTING,
    STATE_SCALING,
    AocLowering,
    choose_alpha_in_range,
    lowered_program,
    section_and_payloads,
)
from admc.targets.aoc.lowering_checks import alpha_range_check, placement_check
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
    from admc.compiler.calibration_drive import calibration_drive

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
    indices = block_indices(len(scaled.blocks))
    for tile in placement.tiles:
        block = scaled.blocks[indices[tile.block]]
        offset = scaled.group(block.column_group).offset
        width = tile.column_stop - tile.column_start
        result[tile.module, tile.input_port_start:tile.input_port_start + width] = (
            offset + np.arange(tile.column_start, tile.column_stop))
    return result


def port_light(points: OperatingPoints, port_channels: np.ndarray, nominal, machine) -> PortLight:
    """The fitted light model of every used input port; an unused one is lit at its voltage 0 (its rest light
    is the z = 0 light, its slope the small-signal one)."""
    default, unused_rest = small_signal(machine, nominal), zero_state_light(machine)
    used = port_channels >= 0
    safe = np.where(used, port_channels, 0)
    slope = {path: np.where(used, points.scale[path][safe] / nominal.light_per_sigma, default[path])
             for path in ("positive", "negative")}
    rest = {path: np.where(used, points.rest[path][safe], unused_rest[path]) for path in ("positive", "negative")}
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


@dataclass(frozen=True)
class CalibratedLowering(AocLowering):
    """The AOC lowering's state with what one measured machine adds (None: not computed yet)."""

    calibration: Any = field(default=None, metadata=NOT_IR)  # the ``Calibration`` read from its file
    machine: Any = None  # its ``MeasuredChain`` for the target's module size
    reach: dict | None = None  # per path, the largest normalised transmission of each pixel
    points: Any = None  # each channel's ``OperatingPoints``
    lights: Any = None  # each input port's ``PortLight``
    compensated: Any = None  # grey levels, gains and cancelling injections (``compensation.Compensated``)


def read_machine(state: CalibratedLowering) -> CalibratedLowering:
    """The measured chain, for a target whose gains and SLM compensation can act on."""
    target, calibration = state.target, state.calibration
    if not target.gain.per_channel:
        raise AdmcError(f"--calibration {calibration.path}: target {target.name} has no per-channel gains; "
                        "compensation needs them")
    if target.slm.float_weights:
        raise AdmcError(f"--calibration {calibration.path}: target {target.name} has float weights (no SLM)")
    return replace(state, machine=measured_chain(calibration, target.module.ports))


def place_on_live_ports(state: CalibratedLowering) -> CalibratedLowering:
    placement, tile_rows = place(state.scaled, state.target, state.layout, state.machine)
    return replace(state, placement=placement, tile_rows=tile_rows)


def model_light(state: CalibratedLowering) -> CalibratedLowering:
    """Each pixel's reach, each channel's operating point and each input port's light model."""
    target, scaled, machine = state.target, state.scaled, state.machine
    reach = pixel_reach(machine, target)
    points = channel_operating_points(state.spine, scaled, machine)
    lights = port_light(points, input_port_channels(scaled, state.placement, target.module.ports), target.chain,
                        machine)
    return replace(state, reach=reach, points=points, lights=lights)


def choose_alpha_for_reach(state: CalibratedLowering) -> CalibratedLowering:
    """The α pass with the range of this machine's pixels: each weight over the reach of its pixel is the
    demand α must bring within β_max (min mode: choose_alpha's floor, as before)."""
    demand = []
    for tile, rows in zip(state.placement.tiles, state.tile_rows, strict=True):
        window = (slice(tile.output_port_start, tile.output_port_stop),
                  slice(tile.input_port_start, tile.input_port_stop))
        available = np.where(rows.weights >= 0, state.reach["positive"][window], state.reach["negative"][window])
        demand.append(TileRows(rows.block_name, rows.row_offset_in_block,
                               rows.weights / np.maximum(available * REACH_SHARE, 1e-300),
                               rows.channels))
    return choose_alpha_in_range(replace(state, alpha_demand=tuple(demand)))


def compensate_machine(state: CalibratedLowering) -> CalibratedLowering:
    """Gains and transmissions, then grey levels, gains and injections for this machine; a row the gain range
    cannot serve (spill pre-compensation can need more than the pixel's reach) gets the α that scales its
    demand into range, as choose_alpha would, for up to ALPHA_ROUNDS rounds; the rest is the remainder."""
    target, placement, tile_rows, alpha = state.target, state.placement, state.tile_rows, state.alpha
    floor_ports = np.zeros((placement.modules_used, target.module.ports))
    for tile, floor in zip(placement.tiles, state.floors, strict=True):
        floor_ports[tile.module, tile.output_port_start:tile.output_port_stop] = floor
    for _ in range(ALPHA_ROUNDS):
        beta, transmissions = gains_and_transmissions(placement, tile_rows, alpha, target, state.floors)
        result = compensate(placement, transmissions, beta, floor_ports, target, state.machine, state.lights)
        raised = alpha.copy()
        for tile, rows in zip(placement.tiles, tile_rows, strict=True):
            row_excess = result.excess[tile.module, tile.output_port_start:tile.output_port_stop]
            wanted = 1.0 - (1.0 - alpha[rows.channels]) / np.maximum(row_excess / (1.0 + REACH_TOLERANCE), 1.0)
            np.maximum.at(raised, rows.channels, np.minimum(wanted, target.alpha.max))
        if np.allclose(raised, alpha, rtol=0, atol=1e-12):
            break
        alpha = raised
    return replace(state, alpha=alpha, beta=result.beta, transmissions=tuple(transmissions), compensated=result)


def inject_operating_shifts(state: CalibratedLowering) -> CalibratedLowering:
    """The operating-point shift: state z + δ on the machine means (1 − α) δ more drive (the relaxation's
    share), added once per channel on the first output port that writes it."""
    result, alpha, shift = state.compensated, state.alpha, state.points.shift
    cancel_fixed = result.cancel_fixed.copy()
    shifted_channels = set()
    for tile, rows in zip(state.placement.tiles, state.tile_rows, strict=True):
        for index, channel in enumerate(rows.channels):
            if channel in shifted_channels or shift[channel] == 0.0:
                continue
            shifted_channels.add(channel)
            cancel_fixed[tile.module, tile.output_port_start + index] += (1.0 - alpha[channel]) * shift[channel]
    return replace(state, compensated=replace(result, cancel_fixed=cancel_fixed))


def realise_on_machine(state: CalibratedLowering) -> CalibratedLowering:
    """The weights this machine realises: its effective transmissions with the compensated gains."""
    result, scaled = state.compensated, state.scaled
    image_set = ImageSet(None, result.grey, result.effective, effective=True)
    achieved = realised_blocks(scaled, state.placement, image_set, result.beta, state.alpha)
    realised = replace(scaled, blocks=[replace(block, matrix=matrix)
                                       for block, matrix in zip(scaled.blocks, achieved, strict=True)])
    return replace(state, image_sets=(image_set,), realised=realised,
                   weight_errors=weight_errors(scaled, achieved, None))


def drive_convention(state: CalibratedLowering) -> dict:
    """How an operator drives what the bundle does not use, and how to read the images (the makers' cell's
    conventions, so its code loads the bundle unmodified)."""
    ports, modules = state.target.module.ports, state.placement.modules_used
    used_in = input_port_channels(state.scaled, state.placement, ports) >= 0
    used_out = np.zeros((modules, ports), dtype=bool)
    for tile, rows in zip(state.placement.tiles, state.tile_rows, strict=True):
        used_out[tile.module, tile.output_port_start:tile.output_port_start + len(rows.channels)] = True
    grey = state.compensated.grey
    full = 2 ** state.target.slm.bit_depth - 1
    peaks = np.maximum(*(grey[path].reshape(modules, -1).max(axis=1) for path in ("positive", "negative")))
    return {
        "images": f"absolute drive: grey level g drives the SLM at g / {full}; each module's image peaks at {full}, "
                  "so the makers' cell, which divides W by max |W|, loads W = grey levels unchanged (except the "
                  "modules_below_full_scale, whose rows are all at a gain limit)",
        "modules_below_full_scale": [int(module) for module in np.flatnonzero(peaks < full)],
        "unused_ports": "unused input ports are driven at 0 V: their LEDs shine S(0), whose leak into the used "
                        "detectors cancel_per_factor cancels; unused output ports have gain setting 0 and "
                        "cancel_fixed cancels their closed-loop offset, so their voltage stays 0 V (where a "
                        "port's output drives its own input, as in the makers' cell, it is held at 0 V)",
        "unused_input_ports": [[int(port) for port in np.flatnonzero(~row)] for row in used_in],
        "unused_output_ports": [[int(port) for port in np.flatnonzero(~row)] for row in used_out],
    }


def emit_calibrated_program(state: CalibratedLowering) -> Any:
    """The ``aoc`` section, the cancelling injections and operating points, and the ``calibration`` section."""
    result, machine, calibration, points = state.compensated, state.machine, state.calibration, state.points
    name = Path(calibration.path).name
    line = (f"calibration {name} (sha256 {calibration.sha256[:12]}…): dead input ports "
            f"{machine.dead_input_ports or 'none'}; clipped pixels {result.report['remainder']['clipped_pixels']}, "
            f"rows at the gain limit {result.report['remainder']['rows_at_setting_max']}")
    section, payloads = section_and_payloads(state, (line,))
    payloads = {**payloads,
                "aoc/calibration/cancel_fixed.npy": npy_bytes(result.cancel_fixed),
                "aoc/calibration/cancel_per_factor.npy": npy_bytes(result.cancel_per_factor),
                "aoc/calibration/operating_shift.npy": npy_bytes(points.shift),
                "aoc/calibration/operating_scale.npy": npy_bytes(np.stack([points.scale["positive"],
                                                                           points.scale["negative"]])),
                "aoc/calibration/operating_rest.npy": npy_bytes(np.stack([points.rest["positive"],
                                                                          points.rest["negative"]]))}
    calibration_section = {
        "file": name,
        "sha256": calibration.sha256,
        "channels": calibration.channels,
        "dead_input_ports": machine.dead_input_ports,
        "dead_output_ports": machine.dead_output_ports,
        "cancellation": {"fixed": "aoc/calibration/cancel_fixed.npy",
                         "per_factor": "aoc/calibration/cancel_per_factor.npy",
                         "meaning": "volts added to each output port's injection: fixed + the port's run-time "
                                    "gain factor × per_factor"},
        **result.report,
        "drive": drive_convention(state),
        "operating_points": operating_point_report(points),
    }
    return lowered_program(state, {"aoc": section, "calibration": calibration_section}, payloads)


CALIBRATED_PASSES = (
    BackendPass("measured chain", read_machine),
    STATE_SCALING,
    BackendPass("tiling and placement", place_on_live_ports, placement_check),
    ROUTING,
    BackendPass("operating points", model_light),
    BackendPass("α selection", choose_alpha_for_reach, alpha_range_check),
    GAIN_FLOORS,
    BackendPass("compensation", compensate_machine),
    BackendPass("operating-point shift", inject_operating_shifts),
    BackendPass("realised program", realise_on_machine),
    BackendPass("emission", emit_calibrated_program),  # the driver's check of the whole lowering follows it
)


def calibrated_lowering(compiled: Any, layout: str, calibration: Calibration) -> Lowering:
    """The lowering for one calibrated machine: dead ports avoided, α from the reachable range of each
    pixel, grey levels and gains compensated, static offsets cancelled (``compensation.py``)."""
    return Lowering(CalibratedLowering(compiled, layout, calibration=calibration), CALIBRATED_PASSES)
