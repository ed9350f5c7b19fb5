"""Weights to differential conductance pairs on crossbars, and back.

Requires: a ``Placement`` of the program's blocks (``passes/tiling.py``, from ``block_shapes``: rows = block
outputs on crossbar columns, columns = block inputs on crossbar rows; ``Placement.block_index`` finds a tile's
block), the blocks, per-group voltage scales and the target. Guarantees: every crossbar column
(one output of one tile) gets its own scale s (model weight per µS), the smallest the transimpedance range
allows, so its largest |weight| spans G_max − G_min; a weight w becomes G⁺ − G⁻ = w / s with the unused side
at G_min, each side quantised to the nearest of the device's levels (exact with ``float_levels``). So every
device lies in [G_min, G_max], and ``realised_blocks`` rebuilds s·(G⁺ − G⁻) within half a level (s·ΔG/2) of
each weight. Unused devices sit at G_min on both sides (weight 0). Weights a column's transimpedance range
cannot reach are refused naming the block, tile and column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.core.errors import AdmcError

MICROSIEMENS = 1e-6


@dataclass
class CrossbarArrays:
    """[crossbars, rows (inputs), columns (outputs)] conductances (µS) and levels; per column scale and TIA."""

    positive_us: np.ndarray
    negative_us: np.ndarray
    positive_levels: np.ndarray | None
    negative_levels: np.ndarray | None
    column_scale: np.ndarray  # [crossbars, columns]: model weight per µS (0: unused column)
    tia_gain_ohm: np.ndarray  # [crossbars, columns] (0: unused column)




def map_conductances(program, placement, volts_per_unit: dict[str, float], target) -> CrossbarArrays:
    size = target.crossbar.size
    conductance = target.conductance
    span = conductance.g_max_us - conductance.g_min_us
    step = conductance.level_step_us
    shape = (placement.modules_used, size, size)
    positive = np.full(shape, conductance.g_min_us)
    negative = np.full(shape, conductance.g_min_us)
    levels = None if conductance.float_levels else {
        "positive": np.zeros(shape, dtype=np.uint16), "negative": np.zeros(shape, dtype=np.uint16)}
    column_scale = np.zeros(shape[:2])
    tia = np.zeros(shape[:2])
    for tile_number, tile in enumerate(placement.tiles):
        block = program.blocks[placement.block_index(tile)]
        matrix = block.matrix[tile.row_start:tile.row_stop, tile.column_start:tile.column_stop]  # [outputs, inputs]
        # R = s[Ω⁻¹ per µS → per S] · c_out / c_in converts the column's current into the next layer's volts.
        ohms_per_scale = volts_per_unit[block.row_group] / (volts_per_unit[block.column_group] * MICROSIEMENS)
        needed = np.max(np.abs(matrix), axis=1) / span
        scale = np.maximum(needed, target.periphery.tia_gain_min_ohm / ohms_per_scale)
        too_large = np.flatnonzero(scale * ohms_per_scale > target.periphery.tia_gain_max_ohm * (1 + 1e-12))
        if too_large.size:
            row = int(too_large[0])
            raise AdmcError(
                f"{tile.block} (tile {tile_number}, output {tile.row_start + row}): weights up to "
                f"{needed[row] * span:.3g} need a transimpedance of {scale[row] * ohms_per_scale:.3g} Ω, above "
                f"periphery.tia_gain_max_ohm {target.periphery.tia_gain_max_ohm:.3g} Ω")
        normalised = matrix / scale[:, None]  # in µS, |.| ≤ span
        if conductance.float_levels:
            pos_us, neg_us = np.maximum(normalised, 0.0), np.maximum(-normalised, 0.0)
        else:
            pos_level = np.rint(np.maximum(normalised, 0.0) / step).astype(np.uint16)
            neg_level = np.rint(np.maximum(-normalised, 0.0) / step).astype(np.uint16)
            pos_us, neg_us = pos_level * step, neg_level * step
        inputs = slice(tile.input_port_start, tile.input_port_stop)
        outputs = slice(tile.output_port_start, tile.output_port_stop)
        positive[tile.module, inputs, outputs] = conductance.g_min_us + pos_us.T
        negative[tile.module, inputs, outputs] = conductance.g_min_us + neg_us.T
        if levels is not None:
            levels["positive"][tile.module, inputs, outputs] = pos_level.T
            levels["negative"][tile.module, inputs, outputs] = neg_level.T
        column_scale[tile.module, outputs] = scale
        tia[tile.module, outputs] = scale * ohms_per_scale
    return CrossbarArrays(positive, negative, None if levels is None else levels["positive"],
                          None if levels is None else levels["negative"], column_scale, tia)


def _assemble(shapes: list[tuple[int, int]], tiles: list[dict], positive_us: np.ndarray, negative_us: np.ndarray,
              column_scale: np.ndarray, combine) -> list[np.ndarray]:
    blocks = [np.zeros(shape) for shape in shapes]
    for tile in tiles:
        inputs = slice(tile["input_port_start"], tile["input_port_start"] + tile["columns"])
        outputs = slice(tile["output_port_start"], tile["output_port_start"] + tile["rows"])
        scale = column_scale[tile["module"], outputs][:, None]
        value = combine(scale, positive_us[tile["module"], inputs, outputs].T,
                        negative_us[tile["module"], inputs, outputs].T)
        blocks[tile["block_index"]][tile["row_start"]:tile["row_start"] + tile["rows"],
                                    tile["column_start"]:tile["column_start"] + tile["columns"]] = value
    return blocks


def realised_blocks(shapes: list[tuple[int, int]], tiles: list[dict], positive_us: np.ndarray,
                    negative_us: np.ndarray, column_scale: np.ndarray) -> list[np.ndarray]:
    """s · (G⁺ − G⁻) per block ([rows, columns] shapes given) from the crossbars' conductances."""
    return _assemble(shapes, tiles, positive_us, negative_us, column_scale,
                     lambda scale, positive, negative: scale * (positive - negative))


def variance_blocks(shapes: list[tuple[int, int]], tiles: list[dict], positive_us: np.ndarray,
                    negative_us: np.ndarray, column_scale: np.ndarray) -> list[np.ndarray]:
    """s² · (G⁺² + G⁻²) per block: a column's current variance per unit input² and unit relative noise²,
    in model units (each device's current fluctuating independently)."""
    return _assemble(shapes, tiles, positive_us, negative_us, column_scale,
                     lambda scale, positive, negative: scale ** 2 * (positive ** 2 + negative ** 2))


def tile_entries(placement) -> list[dict]:
    return [{"block": tile.block, "block_index": placement.block_index(tile), "module": tile.module,
             "row_start": tile.row_start, "rows": tile.rows, "column_start": tile.column_start,
             "columns": tile.columns, "output_port_start": tile.output_port_start,
             "input_port_start": tile.input_port_start} for tile in placement.tiles]
