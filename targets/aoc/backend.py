"""AOC backend steps: what lowers a spine program to what an analog optical computer loads (docs/design.md §4).

The steps (each a pure function of the previous ones' results; ``lowering.py`` runs them as named passes):
state scaling (voltages within range) → tiling and placement on modules → routing → α selection → gain
floors → α and β per tile row → Δt placement (gains, or one image set per distinct step factor when the
target has no per-channel gains) → sign split and SLM quantisation through the response curve → realised
blocks and weight errors → module images, channel tables, routing (``emit.py``).

Requires: a ``CompiledProgram`` from the spine for an ``AocTarget``. Guarantees: the bundle's realised
program (``bundle_reader``) equals the scaled program up to SLM quantisation (≤ half a grey level per
weight), exactly when the target has float weights; no step changes its arguments.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import CLOSED, FEEDBACK, FIXED, STEP, block_indices, block_name
from admc.passes.alpha_probe import scaled_probes
from admc.passes.alpha_selection import AlphaCapabilities, AlphaSelection, select_alpha
from admc.passes.routing_table import routing_json
from admc.passes.state_scaling import (
    apply_scales,
    calibration_samples,
    choose_scales,
    headroom_report,
    measure_peaks,
)
from admc.passes.tiling import Placement, block_shapes, place_blocks, place_blocks_avoiding
from admc.targets.aoc.channel_gains import TileRows, choose_alpha, tile_gains
from admc.targets.aoc.image_sets import Factors, class_factor
from admc.targets.aoc.slm import quantise, sign_split

PATHS = ("positive", "negative")
# Tiles quantised per call (quantise_set): 1,024 tiles of 48 × 48 are 19 MB of float64 per array.
QUANTISE_TILES = 1024


@dataclass(frozen=True)
class ImageSet:
    """Grey levels and realised transmissions [modules, input port, output port] of one set of images."""

    factors: Factors | None  # None: Δt in the gains (the one set serves every phase)
    grey: dict[str, np.ndarray]
    realised: dict[str, np.ndarray]
    effective: bool = False  # realised on a measured machine: the bundle stores them beside the grey levels


def scale_states(compiled, target):
    voltage_limit = min(abs(target.state.voltage_min), abs(target.state.voltage_max))
    from admc.compiler.calibration_drive import calibration_drive  # conditional programs: conditions in the peaks

    samples = calibration_samples(compiled.program)
    made = compiled.calibration_peaks  # the run the settling α was checked with, when it is this one
    if made is not None and made.measured(compiled.alpha, samples):
        state_peak, drive_peak = made.state_peak, made.drive_peak
    else:
        drive = calibration_drive(compiled, samples=samples)
        state_peak, drive_peak = measure_peaks(compiled.program, compiled.schedule, compiled.alpha,
                                               samples=samples, extra_drive=drive)
    scales = choose_scales(compiled.program, state_peak, drive_peak, voltage_limit, target.state.injection_clip,
                           target.sigma.gain_min, target.sigma.gain_max)
    headroom = headroom_report(compiled.program, scales, state_peak, drive_peak, voltage_limit,
                               target.state.injection_clip)
    return apply_scales(compiled.program, scales), headroom


def place(program, target, layout: str, machine=None) -> tuple[Placement, tuple[TileRows, ...]]:
    """Tiles on modules (on a measured ``machine``, never on a dead port) and each tile's weights and rows."""
    blocks = block_shapes(program.blocks)
    if machine is None:
        placement = place_blocks(blocks, target.module.ports, layout, target.module.count)
    else:  # a measured machine: never a weight on a dead LED or detector
        placement = place_blocks_avoiding(blocks, target.module.ports, layout, target.module.count,
                                          machine.dead_input_ports, machine.dead_output_ports)
    indices = block_indices(len(program.blocks))
    tile_rows = []
    for tile in placement.tiles:
        block = program.blocks[indices[tile.block]]
        offset = program.group(block.row_group).offset
        tile_rows.append(TileRows(tile.block, tile.row_start,
                                  block.matrix[tile.row_start:tile.row_stop, tile.column_start:tile.column_stop],
                                  np.arange(offset + tile.row_start, offset + tile.row_stop)))
    return placement, tuple(tile_rows)


def route(program, placement: Placement) -> dict:
    """The routing of ``placement`` (channels → LEDs, detectors → sums → channels) in its JSON form, built from
    the checked placement as arrays (``routing_table.py``: the graph form costs minutes at 36M weights)."""
    return routing_json(placement, block_shapes(program.blocks), program.groups)


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
    indices = block_indices(len(program.blocks))
    floors = []
    for tile in placement.tiles:
        scale_class = program.blocks[indices[tile.block]].scale_class
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
    indices = block_indices(len(program.blocks))
    by_factor: dict[float, list[int]] = {}
    for position, tile in enumerate(placement.tiles):
        scale_class = program.blocks[indices[tile.block]].scale_class
        by_factor.setdefault(1.0 if factors is None else class_factor(factors, scale_class), []).append(position)
    # One quantisation per path and factor over up to QUANTISE_TILES tiles' pixels at once (elementwise, so the
    # same levels as tile by tile): per-tile calls cost 20 % more at 36M weights, and a chunk bounds the memory.
    chunks = [(factor, positions[start:start + QUANTISE_TILES]) for factor, positions in by_factor.items()
              for start in range(0, len(positions), QUANTISE_TILES)]
    def quantise_chunk(chunk: tuple[float, list[int]]) -> None:
        factor, positions = chunk
        flat = np.concatenate([(factor * transmissions[position]).ravel() for position in positions])
        ends = np.cumsum([transmissions[position].size for position in positions])[:-1]
        for path, part in zip(PATHS, sign_split(flat), strict=True):
            levels, realised_part = quantise(part, target.slm.response_for(path), target.slm.bit_depth,
                                             float_weights=target.slm.float_weights)
            pieces = zip(positions, np.split(realised_part, ends),
                         np.split(levels, ends) if levels is not None else [None] * len(positions), strict=True)
            for position, realised_piece, level_piece in pieces:
                tile = placement.tiles[position]
                shape = transmissions[position].shape
                window = (tile.module, slice(tile.input_port_start, tile.input_port_stop),
                          slice(tile.output_port_start, tile.output_port_stop))
                realised[path][window] = realised_piece.reshape(shape).T
                if level_piece is not None:
                    grey[path][window] = level_piece.reshape(shape).T

    # Chunks write disjoint windows (tiles never share a module's ports), and numpy releases the GIL in the
    # search and the arithmetic: on a thread per core a 36M-weight program's 62 chunks take half the time.
    if len(chunks) > 1 and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(quantise_chunk, chunks))
    else:
        for chunk in chunks:
            quantise_chunk(chunk)
    return ImageSet(factors, grey, realised)


def realised_blocks(program, placement: Placement, image_set: ImageSet, beta: np.ndarray, alpha: np.ndarray
                    ) -> list[np.ndarray]:
    """W̃ = β (T⁺ − T⁻) / (1 − α) per block, from the realised transmissions of one image set."""
    blocks = [np.zeros(block.matrix.shape) for block in program.blocks]
    indices = block_indices(len(program.blocks))
    for tile in placement.tiles:
        block = program.blocks[indices[tile.block]]
        channels = np.arange(tile.row_start, tile.row_stop) + program.group(block.row_group).offset
        ports_out = slice(tile.output_port_start, tile.output_port_stop)
        ports_in = slice(tile.input_port_start, tile.input_port_stop)
        signed = (image_set.realised["positive"][tile.module, ports_in, ports_out]
                  - image_set.realised["negative"][tile.module, ports_in, ports_out]).T
        gains = beta[tile.module, ports_out] / (1.0 - alpha[channels])
        blocks[indices[tile.block]][tile.row_start:tile.row_stop,
                                    tile.column_start:tile.column_stop] = gains[:, None] * signed
    return blocks


# Entries per chunk of rows in weight_errors: a block larger than this is compared in chunks that stay in cache
# (at 36M weights the whole-block temporaries were three fresh 134 MB arrays per block).
ERROR_CHUNK_ENTRIES = 1 << 20


def weight_errors(program, achieved: list[np.ndarray], factors: Factors | None) -> list[dict]:
    errors = []
    for index, (block, realised) in enumerate(zip(program.blocks, achieved, strict=True)):
        factor = 1.0 if factors is None else class_factor(factors, block.scale_class)
        rows, columns = block.matrix.shape
        step = max(1, ERROR_CHUNK_ENTRIES // max(columns, 1))
        peak, largest, squares = 0.0, 0.0, 0.0
        for start in range(0, max(rows, 1), step):
            intended = factor * block.matrix[start:start + step]
            difference = realised[start:start + step] - intended
            peak = max(peak, float(np.max(np.abs(intended), initial=0.0)))
            largest = max(largest, float(np.max(np.abs(difference), initial=0.0)))
            squares += float(np.sum(difference ** 2))
        scale = peak or 1.0
        errors.append({"block": block_name(index), "rows": rows, "columns": columns,
                       "max_relative": largest / scale,
                       "rms_relative": float(np.sqrt(squares / block.matrix.size if block.matrix.size else np.nan))
                       / scale})
    return errors


def alpha_in_range(compiled, scaled, tile_rows, target) -> AlphaSelection:
    """The α pass, run once, on the scaled program with the gain-range constraint (1 − α_i) m_i ≤ β_max from
    the start (``tile_rows``: the weights each channel's rows must bring within β_max)."""
    from admc.compiler.calibration_drive import condition_sampler  # as the calibration run: conditions in its runs

    floor = choose_alpha(tile_rows, scaled.size, target.gain.beta_max, target.alpha.min, target.alpha.max)
    if target.alpha.per_phase:
        raise AdmcError("alpha.per_phase: the AOC program holds one α table for every phase; set it to false")
    row_peaks = np.zeros(scaled.size)
    for rows in tile_rows:
        np.maximum.at(row_peaks, rows.channels, np.max(np.abs(rows.weights), axis=1, initial=0.0))
    selection = select_alpha(scaled, compiled.schedule, AlphaCapabilities.of(target), compiled.alpha_mode,
                             row_peaks, target.gain.beta_max, compiled.force, _calibration_probes(compiled, scaled),
                             condition_sampler(compiled.condition_interface))
    # The bounds are the floor already; the maximum only absorbs rounding in 1 − β_max / m_i.
    return replace(selection, alpha=np.maximum(selection.alpha, floor))


def _calibration_probes(compiled, scaled) -> list | None:
    """The closed loops of the calibration run (made on the spine program), in the scaled program's volts."""
    made = compiled.calibration_peaks
    if made is None or made.probes is None:
        return None
    factor = np.ones(scaled.size)
    for group, spine_group in zip(scaled.groups, compiled.program.groups, strict=True):
        factor[group.offset:group.stop] = group.voltage_scale / spine_group.voltage_scale
    return scaled_probes(made.probes, factor)
