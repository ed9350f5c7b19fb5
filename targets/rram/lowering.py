"""RRAM backend: lower a continuous-time spine program to what a crossbar chip with integrators loads.

Pipeline (each step a pure function of the previous): calibration run (peaks, the state's fastest rate) →
physical time per unit model time from the layer bandwidth (``timing.py``) → voltage scale per group →
tiling and placement with the crossbar size as the module size (``passes/tiling.py``, shared with the
optical target; tiles of one output on several crossbars have their partial outputs summed per channel) →
conductance pairs with a scale per crossbar column, quantised to the device levels (``conductance.py``) →
DAC waveforms of the time-only inputs and the ADC range (``converters.py``) → payloads (``emit.py``).

Requires: a ``CompiledProgram`` from the spine with the ``continuous`` solver for an ``RramTarget``.
Guarantees: the realised program (what the bundle's conductances and DAC tables compute) equals the spine up
to conductance quantisation (≤ half a level per weight) and the DAC tables' interpolation, exactly the spine's
weights with float levels; the report states the verify criterion, the bound quantisation explains a priori
(``quantisation_bound``) and the error it caused on calibration noise.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.passes.routing import check_routing, routing_graph
from admc.passes.tiling import MatrixBlock as TilingBlock
from admc.passes.tiling import StateGroup as TilingGroup
from admc.passes.tiling import place_blocks
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


def block_name(index: int) -> str:
    return f"block_{index:04d}"


def volts_per_unit(program, calibration, target) -> dict[str, float]:
    """Per group: row volts per unit of value, so the group's peak stays at HEADROOM × the read voltage."""
    scales = {}
    for group in program.groups:
        peak = max(calibration.input_peaks.get(group.name, 0.0), calibration.output_peaks.get(group.name, 0.0))
        scales[group.name] = HEADROOM * target.periphery.read_voltage_v / peak if peak > 0 else 1.0
    return scales


def place(program, target, layout: str):
    groups = [TilingGroup(group.name, group.offset, group.size) for group in program.groups]
    blocks = [TilingBlock(block_name(index), block.row_group, block.column_group, block.matrix.shape[0],
                          block.matrix.shape[1], block.layer) for index, block in enumerate(program.blocks)]
    placement = place_blocks(blocks, target.crossbar.size, layout, target.crossbar.count)
    routing = routing_graph(placement, blocks, groups)
    check_routing(routing, placement, blocks, groups)
    return placement, routing


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


def lower_to_rram(compiled, layout: str):
    target, spine, schedule = compiled.target, compiled.program, compiled.schedule
    calibration = calibrate(spine, schedule.grid)
    time_scale = choose_time_scale(calibration, spine.open_iterations, target)
    volts = volts_per_unit(spine, calibration, target)
    placement, routing = place(spine, target, layout)
    arrays = map_conductances(spine, placement, volts, target)
    tiles = tile_entries(placement)
    shapes = [block.matrix.shape for block in spine.blocks]
    achieved = realised_blocks(shapes, tiles, arrays.positive_us, arrays.negative_us, arrays.column_scale)
    waveforms = dac_waveforms(spine, dac_times(schedule.grid, time_scale.seconds_per_unit,
                                               target.periphery.dac_rate_hz), target.periphery.dac_bits)
    intended = replace(spine, static_table=waveforms.table)
    realised = replace(intended, blocks=[replace(block, matrix=matrix)
                                         for block, matrix in zip(spine.blocks, achieved, strict=True)])
    errors = level_errors(spine, achieved, arrays, tiles, target.conductance.level_step_us)
    report = dict(compiled.report)
    if target.conductance.float_levels:
        report["verify_criterion"], report["verify_tolerance"] = "relative_error", FLOAT_TOLERANCE
    else:
        report["quantisation_nrmse"] = quantisation_nrmse(spine, realised, schedule.grid)
        report["verify_criterion"] = "per_step_nrmse"
        report["verify_tolerance"] = quantisation_bound(spine.open_iterations, target.conductance.levels)
    adc_range = ADC_RANGE_FACTOR * calibration.final_peak
    return attach_rram_program(compiled, intended, realised, report, placement, routing, arrays, tiles,
                               waveforms, time_scale, volts, adc_range, errors, calibration)
