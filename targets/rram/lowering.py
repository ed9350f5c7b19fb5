"""RRAM backend: lower a continuous-time spine program to what a crossbar chip with integrators loads.

Pipeline (each step a pure function of the previous): calibration run (peaks, the state's fastest rate) →
physical time per unit model time from the layer bandwidth (``timing.py``) → voltage scale per group →
tiling and placement with the crossbar size as the module size (``passes/tiling.py``, shared with the
optical target; tiles of one output on several crossbars have their partial outputs summed per channel) →
conductance pairs with a scale per crossbar column, quantised to the device levels (``conductance.py``) →
DAC waveforms of the time-only inputs and the ADC range (``converters.py``) → payloads (``emit.py``).

Each step is a named pass over an :class:`RramLowering` (calibration run → time scale → voltage scales →
tiling and placement → routing → conductance mapping → dac waveforms → quantisation bound → emission),
returning a new state; emission returns the lowered ``CompiledProgram``, a new one.

Requires: a ``CompiledProgram`` from the spine with the ``continuous`` solver for an ``RramTarget`` (read,
never changed). Guarantees: the realised program (what the bundle's conductances and DAC tables compute)
equals the spine up to conductance quantisation (≤ half a level per weight) and the DAC tables'
interpolation, exactly the spine's weights with float levels; the report states the verify criterion, the
bound quantisation explains a priori (``quantisation_bound``) and the error it caused on calibration noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from admc.ir.program import block_name
from admc.passes.manager import NOT_IR, BackendPass, Lowering
from admc.passes.routing_table import routing_json
from admc.passes.tiling import block_shapes, place_blocks
from admc.runtime.continuous import run_program_continuous
from admc.targets.rram.conductance import map_conductances, realised_blocks, tile_entries
from admc.targets.rram.converters import dac_times, dac_waveforms
from admc.targets.rram.emit import attach_rram_program
from admc.targets.rram.timing import calibrate, choose_time_scale
from admc.verify.metrics import per_step_nrmse

# Voltages stay within this fraction of their limit on the calibration samples.
HEADROOM = 0.8
# The ADC's range covers the calibration samples' peak at t = 1 by this factor.
ADC_RANGE_FACTOR = 1.25
# Float conductances: the ideal bundle executor must match the continuous reference to this (issue 11).
FLOAT_TOLERANCE = 1e-4
# The compile-time measurement of quantisation's effect (reported, not enforced) needs percent accuracy only.
CHECK_SAMPLES = 32
CHECK_TOLERANCE = 1e-7


def volts_per_unit(program, calibration, target) -> dict[str, float]:
    """Per group: row volts per unit of value, so the group's peak stays at HEADROOM × the read voltage."""
    scales = {}
    for group in program.groups:
        peak = max(calibration.input_peaks.get(group.name, 0.0), calibration.output_peaks.get(group.name, 0.0))
        scales[group.name] = HEADROOM * target.periphery.read_voltage_v / peak if peak > 0 else 1.0
    return scales


def place(program, target, layout: str):
    """Tiles on crossbars, the crossbar size as the module size."""
    return place_blocks(block_shapes(program.blocks), target.crossbar.size, layout, target.crossbar.count)


def route(program, placement):
    """The routing of ``placement`` (rows' drivers → crossbar inputs, columns → sums → channels) as its file,
    built from the checked placement (``passes/routing_table.py``)."""
    return routing_json(placement, block_shapes(program.blocks), program.groups)


def level_errors(program, realised: list[np.ndarray], arrays, tiles: list[dict], step_us: float) -> list[dict]:
    """Per block: the largest |realised − intended| weight in units of its column's level (≤ 0.5)."""
    worst = [0.0] * len(program.blocks)
    for tile in tiles:
        outputs = slice(tile["output_port_start"], tile["output_port_start"] + tile["rows"])
        rows = slice(tile["row_start"], tile["row_start"] + tile["rows"])
        columns = slice(tile["column_start"], tile["column_start"] + tile["columns"])
        index = tile["block_index"]
        difference = np.abs(realised[index][rows, columns] - program.blocks[index].matrix[rows, columns])
        level = arrays.column_scale[tile["module"], outputs][:, None] * step_us
        worst[index] = max(worst[index], float(np.max(difference / level, initial=0.0)))
    return [{"block": block_name(index), "rows": block.matrix.shape[0], "columns": block.matrix.shape[1],
             "max_error_levels": value} for index, (block, value) in enumerate(zip(program.blocks, worst,
                                                                                     strict=True))]


def quantisation_nrmse(spine, realised, grid) -> float:
    noise = np.random.default_rng(12345).standard_normal((CHECK_SAMPLES, spine.state_dimension))
    expected = run_program_continuous(spine, grid, noise, CHECK_TOLERANCE, CHECK_TOLERANCE)
    achieved = run_program_continuous(realised, grid, noise, CHECK_TOLERANCE, CHECK_TOLERANCE)
    return float(np.max(per_step_nrmse(achieved[1:], expected[1:])))


def quantisation_bound(layers_in_series: int, levels: int) -> float:
    """The per-step NRMSE quantisation explains, a priori: each layer's weights err by at most half a level,
    1 / (2 (levels − 1)) of their column's full range, and the relative errors of layers in series add."""
    return layers_in_series / (2.0 * (levels - 1))


@dataclass(frozen=True)
class RramLowering:
    """What the RRAM lowering has computed so far (None: not yet). ``spine`` is the compiled spine program."""

    spine: Any = field(metadata=NOT_IR)
    layout: str = "auto"
    calibration: Any = None  # the calibration run's peaks and fastest rate (``timing.Calibration``)
    time_scale: Any = None
    volts: dict | None = None  # per group, row volts per unit of value
    placement: Any = None
    routing: Any = None
    arrays: Any = None  # conductances and column scales (``conductance.CrossbarArrays``)
    tiles: list | None = None
    achieved: list | None = None  # the blocks the conductances realise
    waveforms: Any = None
    intended: Any = None  # the spine program with the DAC tables as its static table
    realised: Any = None
    weight_errors: list | None = None
    report: dict | None = None

    @property
    def target(self) -> Any:
        return self.spine.target


def run_calibration(state: RramLowering) -> RramLowering:
    return replace(state, calibration=calibrate(state.spine.program, state.spine.schedule.grid))


def scale_time(state: RramLowering) -> RramLowering:
    return replace(state, time_scale=choose_time_scale(state.calibration, state.spine.program.open_iterations,
                                                       state.target))


def scale_voltages(state: RramLowering) -> RramLowering:
    return replace(state, volts=volts_per_unit(state.spine.program, state.calibration, state.target))


def place_tiles(state: RramLowering) -> RramLowering:
    return replace(state, placement=place(state.spine.program, state.target, state.layout))


def route_tiles(state: RramLowering) -> RramLowering:
    return replace(state, routing=route(state.spine.program, state.placement))


def map_weights(state: RramLowering) -> RramLowering:
    """Conductance pairs per crossbar column, quantised to the device levels, and the blocks they realise."""
    spine = state.spine.program
    arrays = map_conductances(spine, state.placement, state.volts, state.target)
    tiles = tile_entries(state.placement)
    shapes = [block.matrix.shape for block in spine.blocks]
    achieved = realised_blocks(shapes, tiles, arrays.positive_us, arrays.negative_us, arrays.column_scale)
    return replace(state, arrays=arrays, tiles=tiles, achieved=achieved)


def conductance_check(state: RramLowering) -> tuple[float, float]:
    """The largest |realised − intended| weight in units of its column's level: at most half a level."""
    errors = level_errors(state.spine.program, state.achieved, state.arrays, state.tiles,
                          state.target.conductance.level_step_us)
    return max((entry["max_error_levels"] for entry in errors), default=0.0), 0.5 + 1e-9


def tabulate_drives(state: RramLowering) -> RramLowering:
    """DAC waveforms of the time-only inputs; the intended and realised programs read them."""
    spine, schedule, target = state.spine.program, state.spine.schedule, state.target
    waveforms = dac_waveforms(spine, dac_times(schedule.grid, state.time_scale.seconds_per_unit,
                                               target.periphery.dac_rate_hz), target.periphery.dac_bits)
    intended = replace(spine, static_table=waveforms.table)
    realised = replace(intended, blocks=[replace(block, matrix=matrix)
                                         for block, matrix in zip(spine.blocks, state.achieved, strict=True)])
    return replace(state, waveforms=waveforms, intended=intended, realised=realised)


def bound_quantisation(state: RramLowering) -> RramLowering:
    """Each block's level error and what verify holds the program to (with quantised levels: the a priori
    bound, and the error quantisation caused on calibration noise)."""
    spine, target = state.spine.program, state.target
    errors = level_errors(spine, state.achieved, state.arrays, state.tiles, target.conductance.level_step_us)
    report = dict(state.spine.report)
    if target.conductance.float_levels:
        report["verify_criterion"], report["verify_tolerance"] = "relative_error", FLOAT_TOLERANCE
    else:
        report["quantisation_nrmse"] = quantisation_nrmse(spine, state.realised, state.spine.schedule.grid)
        report["verify_criterion"] = "per_step_nrmse"
        report["verify_tolerance"] = quantisation_bound(spine.open_iterations, target.conductance.levels)
    return replace(state, weight_errors=errors, report=report)


def emit_program(state: RramLowering) -> Any:
    adc_range = ADC_RANGE_FACTOR * state.calibration.final_peak
    # ``attach_rram_program`` sets the fields of the program and report it is given: it gets copies.
    return attach_rram_program(replace(state.spine), state.intended, state.realised, dict(state.report),
                               state.placement, state.routing, state.arrays, state.tiles, state.waveforms,
                               state.time_scale, state.volts, adc_range, state.weight_errors, state.calibration)


PASSES = (BackendPass("calibration run", run_calibration),
          BackendPass("time scale", scale_time),
          BackendPass("voltage scales", scale_voltages),
          BackendPass("tiling and placement", place_tiles),
          BackendPass("routing", route_tiles),
          BackendPass("conductance mapping", map_weights, conductance_check),
          BackendPass("dac waveforms", tabulate_drives),
          BackendPass("quantisation bound", bound_quantisation),
          BackendPass("emission", emit_program))  # the driver's check of the whole lowering follows it


def rram_lowering(compiled: Any, layout: str) -> Lowering:
    """The RRAM lowering of ``compiled`` as named passes."""
    return Lowering(RramLowering(compiled, layout), PASSES)
