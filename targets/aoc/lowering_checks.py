"""Independent checks of the AOC lowering's passes (``admc build --verify-passes``).

Requires: an ``AocLowering`` state (``lowering.py``) just after the pass a check belongs to. Guarantees: each
check recomputes what its pass promises from the pass's inputs and returns ``(error, bound)``: state scaling
keeps the program's trajectories (exact up to rounding); the tiles carry every weight exactly once, as it is;
the routing gives every weight a path from its column channel to its row channel; α lies in the target's
range and brings every row within β_max; the gains and signed transmissions realise (1 − α) W (divided by
the σ column scales k once they are folded in) with |T| ≤ 1; every pixel realises its transmission within
half the SLM's largest grey-level step (exactly with float weights).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from admc.ir.program import block_indices
from admc.passes.routing import routing_from_json
from admc.runtime.executor import run_ideal
from admc.targets.aoc.image_sets import class_factor
from admc.targets.aoc.sigma_build import column_channels
from admc.targets.aoc.slm import grey_level_weights, sign_split
from admc.verify.metrics import nrmse

# An exact pass may move the trajectories by rounding only; a recomputed identity by a few ulps.
EXACT_BOUND = 1e-9
ROUNDING_BOUND = 1e-12
SAMPLES = 16
SEED = 3
PATHS = ("positive", "negative")


def state_scaling_check(state: Any) -> tuple[float, float]:
    """The scaled program's trajectories against the spine's, on seeded noise (both with the spine's α)."""
    spine = state.spine
    noise = np.random.default_rng(SEED).standard_normal((SAMPLES, spine.program.state_dimension))
    expected = run_ideal(spine.program, spine.schedule, spine.alpha, noise).trajectory
    scaled = run_ideal(state.scaled, spine.schedule, spine.alpha, noise).trajectory
    return nrmse(scaled, expected), EXACT_BOUND


def placement_check(state: Any) -> tuple[float, float]:
    """Weights not in exactly one tile, plus the largest difference of a tile's weights from its block's."""
    program = state.scaled
    indices = block_indices(len(program.blocks))
    count = [np.zeros(block.matrix.shape) for block in program.blocks]
    rebuilt = [np.zeros(block.matrix.shape) for block in program.blocks]
    wrong_channels = 0
    for tile, rows in zip(state.placement.tiles, state.tile_rows, strict=True):
        index = indices[tile.block]
        window = (slice(tile.row_start, tile.row_stop), slice(tile.column_start, tile.column_stop))
        count[index][window] += 1
        rebuilt[index][window] += rows.weights
        offset = program.group(program.blocks[index].row_group).offset
        wrong_channels += int(np.sum(rows.channels != offset + np.arange(tile.row_start, tile.row_stop)))
    uncovered = sum(int(np.sum(times != 1)) for times in count)
    changed = max((float(np.max(np.abs(weights - block.matrix), initial=0.0))
                   for weights, block in zip(rebuilt, program.blocks, strict=True)), default=0.0)
    return uncovered + wrong_channels + changed, 0.0


def routing_check(state: Any) -> tuple[float, float]:
    """Weights without a path column channel → the tile's LED, the tile's detector → sum → row channel."""
    graph, program = routing_from_json(json.loads(state.routing.data)), state.scaled
    indices = block_indices(len(program.blocks))
    unrouted = 0
    for tile_index, tile in enumerate(state.placement.tiles):
        block = program.blocks[indices[tile.block]]
        driven = sum(_carries(graph, ("channel", block.column_group, tile.column_start + offset),
                              ("input_port", tile.module, tile.input_port_start + offset), tile_index, False)
                     for offset in range(tile.column_stop - tile.column_start))
        summed = sum(_carries(graph, ("output_port", tile.module, tile.output_port_start + offset),
                              ("sum", block.row_group, tile.row_start + offset), tile_index, True)
                     and graph.has_edge(("sum", block.row_group, tile.row_start + offset),
                                        ("channel", block.row_group, tile.row_start + offset))
                     for offset in range(tile.row_stop - tile.row_start))
        unrouted += (tile.row_stop - tile.row_start) * (tile.column_stop - tile.column_start) - driven * summed
    return float(unrouted), 0.0


def _carries(graph, source: tuple, destination: tuple, tile_index: int, source_is_port: bool) -> bool:
    port = source if source_is_port else destination
    return graph.has_edge(source, destination) and tile_index in graph.nodes[port].get("tiles", [])


def alpha_range_check(state: Any) -> tuple[float, float]:
    """How far α leaves [α_min, α_max], or a row's (1 − α) max |w| exceeds β_max (relative)."""
    target, alpha = state.target, np.asarray(state.alpha)
    demand = state.tile_rows if state.alpha_demand is None else state.alpha_demand
    outside = max(target.alpha.min - float(np.min(alpha)), float(np.max(alpha)) - target.alpha.max, 0.0)
    excess = 0.0
    for rows in demand:
        peak = np.max(np.abs(rows.weights), axis=1, initial=0.0)
        excess = max(excess, float(np.max((1.0 - alpha[rows.channels]) * peak, initial=0.0)) / target.gain.beta_max
                     - 1.0)
    return max(outside, excess), ROUNDING_BOUND


def gains_check(state: Any) -> tuple[float, float]:
    """Per tile: max |β T / k − (1 − α) W| relative to max |(1 − α) W|, or how far |T| exceeds 1."""
    worst = 0.0
    for tile, rows, transmission in zip(state.placement.tiles, state.tile_rows, state.transmissions, strict=True):
        beta = state.beta[tile.module, tile.output_port_start:tile.output_port_stop]
        column_scale = (np.ones(transmission.shape[1]) if state.sigma_scales is None
                        else state.sigma_scales.scale[column_channels(state.scaled, tile)])
        intended = (1.0 - state.alpha[rows.channels])[:, None] * rows.weights
        realised = beta[:, None] * transmission / column_scale[None, :]
        scale = float(np.max(np.abs(intended), initial=0.0)) or 1.0
        worst = max(worst, float(np.max(np.abs(realised - intended), initial=0.0)) / scale,
                    float(np.max(np.abs(transmission), initial=0.0)) - 1.0)
    return worst, EXACT_BOUND


def quantisation_check(state: Any) -> tuple[float, float]:
    """The largest |realised − intended| sign-split transmission over every image set's pixels."""
    target, program = state.target, state.scaled
    indices = block_indices(len(program.blocks))
    worst = 0.0
    for image_set in state.image_sets:
        for tile, transmission in zip(state.placement.tiles, state.transmissions, strict=True):
            scale_class = program.blocks[indices[tile.block]].scale_class
            factor = 1.0 if image_set.factors is None else class_factor(image_set.factors, scale_class)
            window = (tile.module, slice(tile.input_port_start, tile.input_port_stop),
                      slice(tile.output_port_start, tile.output_port_stop))
            for path, part in zip(PATHS, sign_split(factor * transmission), strict=True):
                worst = max(worst, float(np.max(np.abs(image_set.realised[path][window].T - part), initial=0.0)))
    return worst, half_grey_level(target) + ROUNDING_BOUND


def half_grey_level(target: Any) -> float:
    """Half the largest step between neighbouring grey levels' realised weights (0 with float weights)."""
    if target.slm.float_weights:
        return 0.0
    return max(float(np.max(np.diff(grey_level_weights(target.slm.response_for(path), target.slm.bit_depth))))
               for path in PATHS) / 2.0
