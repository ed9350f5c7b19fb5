"""Placement on a machine with dead ports: no tile touches one, and nothing changes without them."""

from __future__ import annotations

import pytest

from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import live_segment, place_blocks, place_blocks_avoiding

BLOCKS = [BlockShape("block_0000", "h1", "x", 32, 2, 1), BlockShape("block_0001", "h2", "h1", 32, 32, 2),
          BlockShape("block_0002", "x", "h2", 2, 32, 3)]


def test_live_segment() -> None:
    assert live_segment(48, [8]) == (9, 39)
    assert live_segment(48, []) == (0, 48)
    assert live_segment(10, [0, 9]) == (1, 8)
    assert live_segment(10, [3, 6]) == (0, 3)  # first of the equally long runs


@pytest.mark.parametrize("dead_inputs", [[8], [0, 47], [20]])
def test_no_tile_on_a_dead_port(dead_inputs: list[int]) -> None:
    placement = place_blocks_avoiding(BLOCKS, 48, "auto", None, dead_inputs, [5])
    assert placement.ports == 48
    for tile in placement.tiles:
        assert not any(tile.input_port_start <= port < tile.input_port_stop for port in dead_inputs)
        assert not tile.output_port_start <= 5 < tile.output_port_stop
        assert 0 <= tile.input_port_start and tile.input_port_stop <= 48 and tile.output_port_stop <= 48
    covered = sum(tile.rows * tile.columns for tile in placement.tiles)
    assert covered == sum(block.rows * block.columns for block in BLOCKS)


def test_without_dead_ports_it_is_plain_placement() -> None:
    assert place_blocks_avoiding(BLOCKS, 48, "auto") == place_blocks(BLOCKS, 48, "auto")
