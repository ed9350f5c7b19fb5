"""AOC backend: lower a spine program to what an analog optical computer loads (DESIGN.md §4).

Pipeline (each step a pure function of the previous): state scaling (voltages within range) → tiling and
placement on modules → α and β per tile row → sign split and SLM quantisation through the response curve →
module images, channel tables, routing. Δt stays in the gains: every tile's β is multiplied at run time
by its block's scale class factor (per-phase step scale), so one image set serves every step.

Requires: a ``CompiledProgram`` from the spine for an ``AocTarget`` with per-channel gains. Guarantees: the
bundle's realised program (``bundle_reader.realised_blocks``) equals the scaled program up to SLM
quantisation (≤ half a grey level per weight), exactly when the target has float weights.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.bundle import npy_bytes
from admc.errors import AdmcError
from admc.passes.routing import check_routing, routing_graph, routing_to_json
from admc.passes.state_scaling import apply_scales, choose_scales, headroom_report, measure_peaks
from admc.passes.tiling import MatrixBlock as TilingBlock
from admc.passes.tiling import StateGroup as TilingGroup
from admc.passes.tiling import place_blocks
from admc.targets.aoc.channel_gains import TileRows, choose_alpha, tile_gains
from admc.targets.aoc.png import encode_png
from admc.targets.aoc.slm import quantise, sign_split

# Worst per-step NRMSE of the quantised program against the reference allowed at 8 bits (issue 3's figure),
# halving with every extra bit of SLM depth.
QUANTISED_NRMSE_TOLERANCE_8_BIT = 1e-2


def block_name(index: int) -> str:
    return f"block_{index:04d}"


def _realised_block(rows: int, columns: int, tiles: list[tuple], beta: np.ndarray,
                    positive: np.ndarray, negative: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    matrix = np.zeros((rows, columns))
    for tile, channels in tiles:
        ports_out = slice(tile.output_port_start, tile.output_port_stop)
        ports_in = slice(tile.input_port_start, tile.input_port_stop)
        transmission = (positive[tile.module, ports_in, ports_out] - negative[tile.module, ports_in, ports_out]).T
        gains = beta[tile.module, ports_out] / (1.0 - alpha[channels])
        matrix[tile.row_start:tile.row_stop, tile.column_start:tile.column_stop] = gains[:, None] * transmission
    return matrix


def lower_to_aoc(compiled, layout: str):
    target = compiled.target
    if not target.gain.per_channel:
        raise AdmcError(f"target {target.name}: gain.per_channel is false; programs that hold one image set "
                        "per distinct Δt are not implemented yet — use a target with per-channel gains")
    program = compiled.program
    voltage_limit = min(abs(target.state.voltage_min), abs(target.state.voltage_max))
    state_peak, drive_peak = measure_peaks(program, compiled.schedule, compiled.alpha)
    scales = choose_scales(program, state_peak, drive_peak, voltage_limit, target.state.injection_clip,
                           target.sigma.gain_min, target.sigma.gain_max)
    scaled = apply_scales(program, scales)
    headroom = headroom_report(program, scales, state_peak, drive_peak, voltage_limit,
                               target.state.injection_clip)

    ports = target.module.ports
    groups = [TilingGroup(group.name, group.offset, group.size) for group in scaled.groups]
    tiling_blocks = [TilingBlock(block_name(index), block.row_group, block.column_group,
                                 block.matrix.shape[0], block.matrix.shape[1], block.layer)
                     for index, block in enumerate(scaled.blocks)]
    placement = place_blocks(tiling_blocks, ports, layout, target.module.count)
    routing = routing_graph(placement, tiling_blocks, groups)
    check_routing(routing, placement, tiling_blocks, groups)

    block_index = {block_name(index): index for index in range(len(scaled.blocks))}
    tile_rows, tile_channels = [], []
    for tile in placement.tiles:
        block = scaled.blocks[block_index[tile.block]]
        row_offset = scaled.group(block.row_group).offset
        channels = np.arange(row_offset + tile.row_start, row_offset + tile.row_stop)
        weights = block.matrix[tile.row_start:tile.row_stop, tile.column_start:tile.column_stop]
        tile_rows.append(TileRows(tile.block, tile.row_start, weights, channels))
        tile_channels.append(channels)
    alpha = choose_alpha(tile_rows, scaled.size, target.gain.beta_max, target.alpha.min, target.alpha.max)

    modules = placement.modules_used
    beta = np.zeros((modules, ports))
    grey = {path: np.zeros((modules, ports, ports), dtype=np.uint16 if target.slm.bit_depth > 8 else np.uint8)
            for path in ("positive", "negative")}
    realised = {path: np.zeros((modules, ports, ports)) for path in ("positive", "negative")}
    for tile, rows in zip(placement.tiles, tile_rows, strict=True):
        tile_beta, transmission = tile_gains(rows, alpha, target.gain.beta_min)
        beta[tile.module, tile.output_port_start:tile.output_port_stop] = tile_beta
        for path, part in zip(("positive", "negative"), sign_split(transmission), strict=True):
            levels, realised_part = quantise(part, target.slm.response_for(path), target.slm.bit_depth,
                                             float_weights=target.slm.float_weights)
            window = (tile.module, slice(tile.input_port_start, tile.input_port_stop),
                      slice(tile.output_port_start, tile.output_port_stop))
            realised[path][window] = realised_part.T
            if levels is not None:
                grey[path][window] = levels.T

    tiles_by_block: dict[str, list[tuple]] = {}
    for tile, channels in zip(placement.tiles, tile_channels, strict=True):
        tiles_by_block.setdefault(tile.block, []).append((tile, channels))
    weight_errors = []
    for index, block in enumerate(scaled.blocks):
        rows, columns = block.matrix.shape
        achieved = _realised_block(rows, columns, tiles_by_block[block_name(index)], beta,
                                   realised["positive"], realised["negative"], alpha)
        scale = float(np.max(np.abs(block.matrix), initial=0.0)) or 1.0
        difference = achieved - block.matrix
        weight_errors.append({"block": block_name(index), "rows": rows, "columns": columns,
                              "max_relative": float(np.max(np.abs(difference), initial=0.0)) / scale,
                              "rms_relative": float(np.sqrt(np.mean(difference ** 2))) / scale})
    return _attach(compiled, replace(scaled, blocks=scaled.blocks), alpha, placement, routing, beta, grey,
                   realised, headroom, weight_errors)


def _attach(compiled, scaled, alpha, placement, routing, beta, grey, realised, headroom, weight_errors):
    target = compiled.target
    payloads: dict[str, bytes] = {"aoc/beta.npy": npy_bytes(beta), "aoc/routing.json": _json_bytes(
        routing_to_json(routing))}
    if target.slm.float_weights:
        for path in ("positive", "negative"):
            payloads[f"aoc/transmission_{path}.npy"] = npy_bytes(realised[path])
    else:
        for path in ("positive", "negative"):
            payloads[f"aoc/grey_{path}.npy"] = npy_bytes(grey[path])
            for module in range(placement.modules_used):
                payloads[f"aoc/images/module_{module:04d}_{path}.png"] = encode_png(grey[path][module])
    tiles = []
    for tile in placement.tiles:
        block = scaled.blocks[int(tile.block.split("_")[1])]
        tiles.append({**tile.__dict__, "scale_class": block.scale_class, "layer": block.layer})
    per_layer: dict[int, int] = {}
    for entry in tiles:
        per_layer[entry["layer"]] = per_layer.get(entry["layer"], 0) + 1
    ports = placement.ports
    used_weights = sum((tile.row_stop - tile.row_start) * (tile.column_stop - tile.column_start)
                       for tile in placement.tiles)
    utilisation = used_weights / (placement.modules_used * ports * ports)
    worst_error = max((entry["max_relative"] for entry in weight_errors), default=0.0)
    summary = {
        "modules_used": placement.modules_used,
        "lower_bound": placement.lower_bound,
        "tile_lower_bound": placement.tile_lower_bound,
        "layout": placement.layout,
        "placement_solver": placement.solver,
        "utilisation": utilisation,
        "tiles_per_layer": {str(layer): count for layer, count in sorted(per_layer.items())},
        "dt_placement": "gains: Δt and Δt/2 scale the β of step-class tiles per phase; one image set serves "
                        "every step",
        "image_sets": 1,
        "alpha_max": float(np.max(alpha, initial=0.0)),
        "worst_weight_error_relative": worst_error,
    }
    summary["lines"] = _summary_lines(summary, weight_errors, headroom)
    aoc_section = {
        "image_orientation": "image[input_port, output_port]: row = LED source, column = photodetector "
                             "(the machine computes z·W)",
        "payload_bytes_per_module": ports * ports,
        "beta": "aoc/beta.npy",
        "routing": "aoc/routing.json",
        "grey": None if target.slm.float_weights else {path: f"aoc/grey_{path}.npy"
                                                       for path in ("positive", "negative")},
        "transmission": ({path: f"aoc/transmission_{path}.npy" for path in ("positive", "negative")}
                         if target.slm.float_weights else None),
        "tiles": tiles,
        "placement": {key: value for key, value in placement.to_dict().items() if key != "tiles"},
        "headroom": headroom,
        "weight_error": weight_errors,
        "summary": summary,
    }
    report = dict(compiled.report)
    if target.slm.float_weights:
        report["verify_criterion"], report["verify_tolerance"] = "relative_error", 1e-9
    else:
        report["verify_criterion"] = "per_step_nrmse"
        report["verify_tolerance"] = QUANTISED_NRMSE_TOLERANCE_8_BIT * 2.0 ** (8 - target.slm.bit_depth)
    report["modules_used"] = placement.modules_used
    compiled.program = scaled
    compiled.alpha = alpha
    compiled.report = report
    compiled.extra_sections = {"aoc": aoc_section}
    compiled.extra_payloads = payloads
    compiled.block_arrays = False
    return compiled


def _json_bytes(data) -> bytes:
    import json

    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def _summary_lines(summary: dict, weight_errors: list[dict], headroom: list[dict]) -> list[str]:
    lines = [
        f"modules     {summary['modules_used']} used ({summary['layout']}, {summary['placement_solver']}); "
        f"lower bound ⌈max(Σrows, Σcols)/ports⌉ = {summary['lower_bound']}, tiling bound "
        f"{summary['tile_lower_bound']}; utilisation {100 * summary['utilisation']:.1f}% of SLM pixels",
        f"tiles       per layer {summary['tiles_per_layer']}",
        f"Δt          {summary['dt_placement']}",
        f"α           max {summary['alpha_max']:.4f}",
        "weight error per block (relative to the block's max |W|):",
    ]
    for entry in weight_errors:
        lines.append(f"  {entry['block']} {entry['rows']:>5} × {entry['columns']:<5} max "
                     f"{entry['max_relative']:.2e}  rms {entry['rms_relative']:.2e}")
    lines.append("headroom per group (limit / peak on calibration samples):")
    for entry in headroom:
        voltage = entry["voltage_headroom"]
        injection = entry["injection_headroom"]
        lines.append(f"  {entry['group']:<14} scale {entry['voltage_scale']:.4g}  voltage "
                     f"{'—' if voltage is None else f'{voltage:.2f}×'}  injection "
                     f"{'—' if injection is None else f'{injection:.2f}×'}")
    return lines
