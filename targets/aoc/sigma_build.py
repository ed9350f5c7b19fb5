"""Wire the σ-shape compensation (``sigma_shape``) into the uncalibrated AOC lowering.

Requires: the compiled (unscaled) program with its schedule and α, the scaled program, the placement and each
tile's signed transmissions and β from ``gains_and_transmissions``. Guarantees: for a description without a
σ shape, or with no tanh channel to fit, nothing changes (``fit`` returns None); otherwise every tile column
is scaled by its channel's k and the rows renormalised (``fold_into_rows``), and :func:`effective_image_set`
turns the quantised images (T·k) back into the transmissions the program means (realised / k per input port),
which the ideal executor reads; :func:`record` gives what the manifest records (k, the fit and its errors
under ``aoc.sigma_compensation``). Nothing is changed in place.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.bundle.store import npy_bytes
from admc.ir.program import block_indices
from admc.targets.aoc.operating_point import RECORD_SEED, record_samples, record_states
from admc.targets.aoc.sigma_shape import (
    PAYLOAD,
    OutputScales,
    declared_exponent,
    fit_output_scales,
    fold_into_rows,
    port_scales,
    report,
    summary_line,
)


def fit(compiled, scaled, target, alpha: np.ndarray) -> OutputScales | None:
    """k per channel over the voltages the ideal program drives σ with, or None without a declared shape.

    ``alpha``: the α the machine runs (after the gain range), so the transients recorded are the loop's own.
    """
    exponent = declared_exponent(target)
    if exponent is None:
        return None
    from admc.compiler.calibration_drive import calibration_drive

    sigma_gain, voltage_scale = np.ones(scaled.size), np.ones(scaled.size)
    tanh = np.zeros(scaled.size, dtype=bool)
    for group in scaled.groups:
        channels = slice(group.offset, group.stop)
        sigma_gain[channels], voltage_scale[channels] = group.sigma_gain, group.voltage_scale
        tanh[channels] = group.activation == "tanh"
    # Recorded on the unscaled program; ``scale_states`` is exact, so × voltage scale gives the volts.
    samples = record_samples(compiled.program)
    states = record_states(compiled.program, compiled.schedule, alpha, samples=samples,
                           extra_drive=calibration_drive(compiled, samples=samples, seed=RECORD_SEED))
    rails = (target.state.voltage_min, target.state.voltage_max)
    scales = fit_output_scales(states * voltage_scale, sigma_gain, tanh, rails, exponent)
    # Nothing to compensate (a program of the machine's own σ, or no driven tanh channel): build unchanged.
    return scales if scales.fitted.any() else None


def column_channels(scaled, tile) -> np.ndarray:
    block = scaled.blocks[block_indices(len(scaled.blocks))[tile.block]]
    return scaled.group(block.column_group).offset + np.arange(tile.column_start, tile.column_stop)


def fold(scales: OutputScales, scaled, placement, transmissions: list[np.ndarray], beta: np.ndarray,
         floors: list[float], per_channel: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Each tile's transmissions with its columns × k; with per-channel gains, rows renormalised into β."""
    beta = beta.copy()
    folded = []
    for tile, transmission, floor in zip(placement.tiles, transmissions, floors, strict=True):
        column_scale = scales.scale[column_channels(scaled, tile)]
        if not per_channel:  # one gain per module: no row can be renormalised
            folded.append(transmission * column_scale[None, :])
            continue
        ports = (tile.module, slice(tile.output_port_start, tile.output_port_stop))
        tile_transmission, beta[ports] = fold_into_rows(transmission, column_scale, beta[ports], floor)
        folded.append(tile_transmission)
    return folded, beta


def input_port_channels(scaled, placement, ports: int) -> np.ndarray:
    """[M, P] the state channel driving each input port (−1: unused)."""
    channels = np.full((placement.modules_used, ports), -1, dtype=np.int64)
    for tile in placement.tiles:
        columns = column_channels(scaled, tile)
        channels[tile.module, tile.input_port_start:tile.input_port_start + columns.size] = columns
    return channels


def effective_image_set(image_set, scales: OutputScales, scaled, placement, ports: int):
    """The image set with realised transmissions divided by k per input port (what the program means)."""
    per_port = port_scales(scales.scale, input_port_channels(scaled, placement, ports))  # [M, P]
    effective = {path: realised / per_port[:, :, None] for path, realised in image_set.realised.items()}
    return replace(image_set, realised=effective, effective=True)


def record(scales: OutputScales, target) -> tuple[dict, dict[str, bytes], str]:
    """The manifest's ``aoc.sigma_compensation`` section, its payload and the ``admc inspect`` line."""
    section = report(scales, declared_exponent(target))
    return section, {PAYLOAD: npy_bytes(scales.scale)}, summary_line(section)
