"""AOC backend: lower a spine program to what an analog optical computer loads (docs/design.md §4).

Pipeline (each step a pure function of the previous): state scaling (voltages within range) → tiling and
placement on modules → α and β per tile row → Δt placement (gains, or one image set per distinct step
factor when the target has no per-channel gains) → sign split and SLM quantisation through the response
curve → module images, channel tables, routing (``emit.py``).

Requires: a ``CompiledProgram`` from the spine for an ``AocTarget``. Guarantees: the bundle's realised
program (``bundle_reader``) equals the scaled program up to SLM quantisation (≤ half a grey level per
weight), exactly when the target has float weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import CLOSED, FEEDBACK, FIXED, STEP
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha
from admc.passes.routing import check_routing, routing_graph
from admc.passes.state_scaling import apply_scales, choose_scales, headroom_report, measure_peaks
from admc.passes.tiling import MatrixBlock as TilingBlock
from admc.passes.tiling import Placement, place_blocks, place_blocks_avoiding
from admc.passes.tiling import StateGroup as TilingGroup
from admc.targets.aoc import sigma_build
from admc.targets.aoc.channel_gains import TileRows, choose_alpha, tile_gains
from admc.targets.aoc.emit import attach_aoc_program
from admc.targets.aoc.image_sets import Factors, class_factor, image_set_factors
from admc.targets.aoc.slm import quantise, sign_split

PATHS = ("positive", "negative")


def block_name(index: int) -> str:
    return f"block_{index:04d}"


@dataclass
class ImageSet:
    """Grey levels and realised transmissions [modules, input port, output port] of one set of images."""

    factors: Factors | None  # None: Δt in the gains (the one set serves every phase)
    grey: dict[str, np.ndarray]
    realised: dict[str, np.ndarray]
    effective: bool = False  # realised on a measured machine: the bundle stores them beside the grey levels


def scale_states(compiled, target):
    voltage_limit = min(abs(target.state.voltage_min), abs(target.state.voltage_max))
    from admc.compiler.conditional_build import calibration_drive  # conditional programs: conditions in the peaks

    state_peak, drive_peak = measure_peaks(compiled.program, compiled.schedule, compiled.alpha,
                                           extra_drive=calibration_drive(compiled))
    scales = choose_scales(compiled.program, state_peak, drive_peak, voltage_limit, target.state.injection_clip,
                           target.sigma.gain_min, target.sigma.gain_max)
    headroom = headroom_report(compiled.program, scales, state_peak, drive_peak, voltage_limit,
                               target.state.injection_clip)
    return apply_scales(compiled.program, scales), headroom


def place(program, target, layout: str, machine=None) -> tuple[Placement, object, list[TileRows]]:
    groups = [TilingGroup(group.name, group.offset, group.size) for group in program.groups]
    blocks = [TilingBlock(block_name(index), block.row_group, block.column_group, block.matrix.shape[0],
                          block.matrix.shape[1], block.layer) for index, block in enumerate(program.blocks)]
    if machine is None:
        placement = place_blocks(blocks, target.module.ports, layout, target.module.count)
    else:  # a measured machine: never a weight on a dead LED or detector
        placement = place_blocks_avoiding(blocks, target.module.ports, layout, target.module.count,
                                          machine.dead_input_ports, machine.dead_output_ports)
    routing = routing_graph(placement, blocks, groups)
    check_routing(routing, placement, blocks, groups)
    tile_rows = []
    for tile in placement.tiles:
        block = program.blocks[int(tile.block.split("_")[1])]
        offset = program.group(block.row_group).offset
        tile_rows.append(TileRows(tile.block, tile.row_start,
                                  block.matrix[tile.row_start:tile.row_stop, tile.column_start:tile.column_stop],
                                  np.arange(offset + tile.row_start, offset + tile.row_stop)))
    return placement, routing, tile_rows


def smallest_step_scales(schedule) -> dict[str, float]:
    """The smallest factor each scale class is multiplied by at run time (over the phases that use it)."""
    step = [phase.step_scale for phases in schedule.steps for phase in phases]
    feedback = [phase.step_scale for phases in schedule.steps for phase in phases if phase.loop == CLOSED]
    return {FIXED: 1.0, STEP: min(step, default=1.0), FEEDBACK: min(feedback, default=1.0)}


def gain_floors(program, placement: Placement, schedule, target) -> list[float]:
    """Per tile, the smallest β that keeps β × (smallest run-time step factor) ≥ β_min (Δt in the gains).

    A small Δt thus raises the tile's gain and lowers its transmissions (fewer grey levels) rather than
    asking the machine for a gain below its range; if even β_max cannot, the build is refused.
    """
    if not target.gain.per_channel:
        return [target.gain.beta_min] * len(placement.tiles)
    smallest = smallest_step_scales(schedule)
    floors = []
    for tile in placement.tiles:
        scale_class = program.blocks[int(tile.block.split("_")[1])].scale_class
        floor = target.gain.beta_min / smallest[scale_class]
        if floor > target.gain.beta_max:
            raise AdmcError(
                f"{tile.block} ({scale_class} tile): the smallest step factor {smallest[scale_class]:.3g} needs a "
                f"gain of at least beta_min/{smallest[scale_class]:.3g} = {floor:.3g}, above gain.beta_max "
                f"{target.gain.beta_max:.3g}; use larger steps (Δt ≥ {target.gain.beta_min / target.gain.beta_max:.3g}"
                " per gain-scaled phase) or a target without per-channel gains (Δt in the images)")
        floors.append(floor)
    return floors


def gains_and_transmissions(placement: Placement, tile_rows: list[TileRows], alpha: np.ndarray, target,
                            floors: list[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """β per module output port and each tile's signed transmissions in [−1, 1].

    Per-channel gains: each row uses the SLM's full range (down to the tile's gain floor). One gain per
    module: the module's largest row gain serves every row, so smaller rows use fewer grey levels.
    """
    beta = np.zeros((placement.modules_used, target.module.ports))
    transmissions = []
    for tile, rows, floor in zip(placement.tiles, tile_rows, floors, strict=True):
        tile_beta, transmission = tile_gains(rows, alpha, floor)
        beta[tile.module, tile.output_port_start:tile.output_port_stop] = tile_beta
        transmissions.append(transmission * tile_beta[:, None])  # (1 − α) W, rescaled below
    if not target.gain.per_channel:
        beta[:] = np.max(beta, axis=1, keepdims=True)
    return beta, [relaxed / beta[tile.module, tile.output_port_start:tile.output_port_stop][:, None]
                  for tile, relaxed in zip(placement.tiles, transmissions, strict=True)]


def quantise_set(placement: Placement, program, transmissions: list[np.ndarray], factors: Factors | None,
                 target) -> ImageSet:
    ports, modules = target.module.ports, placement.modules_used
    dtype = np.uint16 if target.slm.bit_depth > 8 else np.uint8
    grey = {path: np.zeros((modules, ports, ports), dtype=dtype) for path in PATHS}
    realised = {path: np.zeros((modules, ports, ports)) for path in PATHS}
    for tile, transmission in zip(placement.tiles, transmissions, strict=True):
        scale_class = program.blocks[int(tile.block.split("_")[1])].scale_class
        factor = 1.0 if factors is None else class_factor(factors, scale_class)
        window = (tile.module, slice(tile.input_port_start, tile.input_port_stop),
                  slice(tile.output_port_start, tile.output_port_stop))
        for path, part in zip(PATHS, sign_split(factor * transmission), strict=True):
            levels, realised_part = quantise(part, target.slm.response_for(path), target.slm.bit_depth,
                                             float_weights=target.slm.float_weights)
            realised[path][window] = realised_part.T
            if levels is not None:
                grey[path][window] = levels.T
    return ImageSet(factors, grey, realised)


def realised_blocks(program, placement: Placement, image_set: ImageSet, beta: np.ndarray, alpha: np.ndarray
                    ) -> list[np.ndarray]:
    """W̃ = β (T⁺ − T⁻) / (1 − α) per block, from the realised transmissions of one image set."""
    blocks = [np.zeros(block.matrix.shape) for block in program.blocks]
    for tile in placement.tiles:
        block = program.blocks[int(tile.block.split("_")[1])]
        channels = np.arange(tile.row_start, tile.row_stop) + program.group(block.row_group).offset
        ports_out = slice(tile.output_port_start, tile.output_port_stop)
        ports_in = slice(tile.input_port_start, tile.input_port_stop)
        signed = (image_set.realised["positive"][tile.module, ports_in, ports_out]
                  - image_set.realised["negative"][tile.module, ports_in, ports_out]).T
        gains = beta[tile.module, ports_out] / (1.0 - alpha[channels])
        blocks[int(tile.block.split("_")[1])][tile.row_start:tile.row_stop,
                                              tile.column_start:tile.column_stop] = gains[:, None] * signed
    return blocks


def weight_errors(program, achieved: list[np.ndarray], factors: Factors | None) -> list[dict]:
    errors = []
    for index, (block, realised) in enumerate(zip(program.blocks, achieved, strict=True)):
        factor = 1.0 if factors is None else class_factor(factors, block.scale_class)
        intended = factor * block.matrix
        scale = float(np.max(np.abs(intended), initial=0.0)) or 1.0
        difference = realised - intended
        errors.append({"block": block_name(index), "rows": block.matrix.shape[0],
                       "columns": block.matrix.shape[1],
                       "max_relative": float(np.max(np.abs(difference), initial=0.0)) / scale,
                       "rms_relative": float(np.sqrt(np.mean(difference ** 2))) / scale})
    return errors


def alpha_in_range(compiled, scaled, tile_rows: list[TileRows], target) -> np.ndarray:
    """α for the scaled program: the α pass again with the gain-range constraint (1 − α_i) m_i ≤ β_max.

    ``min`` is the old choice (the smallest α in range); every mode is floored by it, so the range holds.
    """
    floor = choose_alpha(tile_rows, scaled.size, target.gain.beta_max, target.alpha.min, target.alpha.max)
    if compiled.alpha_mode == "min":
        compiled.alpha_selection.alpha = floor
        return floor
    if compiled.alpha.ndim == 2:
        raise AdmcError("alpha.per_phase: the AOC program holds one α table for every phase; set it to false")
    row_peaks = np.zeros(scaled.size)
    for rows in tile_rows:
        np.maximum.at(row_peaks, rows.channels, np.max(np.abs(rows.weights), axis=1, initial=0.0))
    selection = select_alpha(scaled, compiled.schedule, AlphaCapabilities.of(target), compiled.alpha_mode,
                             row_peaks, target.gain.beta_max, compiled.force)
    selection.alpha = np.maximum(selection.alpha, floor)
    compiled.alpha_selection = selection
    return selection.alpha


def lower_to_aoc(compiled, layout: str, calibration=None):
    """``calibration``: a measured machine (``calibration.Calibration``) to compile for (``compensation.py``)."""
    target = compiled.target
    if calibration is not None:
        return lower_to_measured_aoc(compiled, layout, calibration)
    scaled, headroom = scale_states(compiled, target)
    placement, routing, tile_rows = place(scaled, target, layout)
    alpha = alpha_in_range(compiled, scaled, tile_rows, target)
    floors = gain_floors(scaled, placement, compiled.schedule, target)
    beta, transmissions = gains_and_transmissions(placement, tile_rows, alpha, target, floors)
    sigma_scales = sigma_build.fit(compiled, scaled, target, alpha)  # None: no σ shape declared
    if sigma_scales is not None:
        transmissions, beta = sigma_build.fold(sigma_scales, scaled, placement, transmissions, beta, floors,
                                               target.gain.per_channel)
    set_factors = [None] if target.gain.per_channel else image_set_factors(compiled.schedule)
    image_sets = [quantise_set(placement, scaled, transmissions, factors, target) for factors in set_factors]
    if sigma_scales is not None:
        image_sets = [sigma_build.effective_image_set(image_set, sigma_scales, scaled, placement,
                                                      target.module.ports) for image_set in image_sets]
    achieved = {factors: realised_blocks(scaled, placement, image_set, beta, alpha)
                for factors, image_set in zip(set_factors, image_sets, strict=True)}
    if not target.gain.per_channel:
        scaled = replace(scaled, phase_blocks=achieved)
    errors = weight_errors(scaled, achieved[set_factors[0]], set_factors[0])
    realised = replace(scaled, blocks=[replace(block, matrix=matrix) for block, matrix in
                                       zip(scaled.blocks, achieved[set_factors[0]], strict=True)])
    compiled = attach_aoc_program(compiled, scaled, alpha, placement, routing, beta, image_sets, headroom, errors,
                                  realised)
    if sigma_scales is not None:
        sigma_build.record(compiled, sigma_scales, target)
    return compiled


def lower_to_measured_aoc(compiled, layout: str, calibration):
    """The lowering for one calibrated machine: dead ports avoided, α from the reachable range of each
    pixel, grey levels and gains compensated, static offsets cancelled (``compensation.py``)."""
    from admc.targets.aoc.calibrated_build import lower_measured

    return lower_measured(compiled, layout, calibration)
