"""Gain and skip-fraction selection for tiles (docs/design.md §4, "Range").

Requires: tiles of (state-scaled) weight blocks, each row feeding one state channel, and the target's β and
α ranges. Guarantees: for every tile row i feeding channel ch, β_i·T_i = (1 − α_ch)·W_i with T_i in [−1, 1]
and max |T_i| = 1 where β allows (the SLM's full range per row: the best precision). α_ch is the smallest
value in the target's range that brings every row feeding ch within β_max; a row that even α_max cannot
bring in range is refused naming the block, the row, how far out of range it is, and what α or β_max
would fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.core.errors import AdmcError


@dataclass
class TileRows:
    """One tile's weights and the state channels its rows feed."""

    block_name: str
    row_offset_in_block: int
    weights: np.ndarray  # [rows, columns]
    channels: np.ndarray  # [rows] state-channel index per row


def choose_alpha(tiles: list[TileRows], size: int, beta_max: float, alpha_min: float, alpha_max: float) -> np.ndarray:
    alpha = np.full(size, alpha_min)
    for tile in tiles:
        row_peak = np.max(np.abs(tile.weights), axis=1, initial=0.0)
        needed = np.where(row_peak > beta_max, 1.0 - beta_max / np.maximum(row_peak, 1e-300), 0.0)
        worst = int(np.argmax(needed - alpha_max))
        if needed[worst] > alpha_max:
            largest = beta_max / (1.0 - alpha_max)
            raise AdmcError(
                f"block {tile.block_name} row {tile.row_offset_in_block + worst}: max |weight| "
                f"{row_peak[worst]:.4g} is {row_peak[worst] / largest:.3g}× the largest representable "
                f"{largest:.4g} (β_max {beta_max:.4g} / (1 − α_max {alpha_max:.3g})); it needs α ≥ "
                f"{needed[worst]:.4f} or β_max ≥ {row_peak[worst] * (1.0 - alpha_max):.4g}"
            )
        np.maximum.at(alpha, tile.channels, needed)
    return alpha


def tile_gains(tile: TileRows, alpha: np.ndarray, beta_min: float) -> tuple[np.ndarray, np.ndarray]:
    """β per tile row and the normalised signed transmissions T = (1 − α) W / β in [−1, 1]."""
    relaxed = (1.0 - alpha[tile.channels])[:, None] * tile.weights
    beta = np.max(np.abs(relaxed), axis=1, initial=0.0)
    beta = np.maximum(beta, beta_min)
    return beta, relaxed / beta[:, None]
