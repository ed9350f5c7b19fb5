"""The array routing (``routing_table.routing_json``) writes the bytes the graph routing writes (issue 25).

The graph form (``routing.routing_graph`` then ``routing_to_json``) is the independent implementation: every
node, attribute and edge, in order, must agree on chains, on blocks whose groups sort differently from their
positions, on skip blocks that reuse a column group, and on every layout.
"""

from __future__ import annotations

import json
import random

import pytest

from admc.core.errors import AdmcError
from admc.ir.program import StateGroup
from admc.passes.routing import routing_graph, routing_to_json
from admc.passes.routing_table import routing_json
from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import place_blocks

PORTS = 48


def _groups(names_and_sizes: list[tuple[str, int]]) -> list[StateGroup]:
    groups, offset = [], 0
    for name, size in names_and_sizes:
        groups.append(StateGroup(name, offset, size, "tanh"))
        offset += size
    return groups


def _chain(state: int, hidden: list[int], names: list[str]) -> tuple[list[BlockShape], list[StateGroup]]:
    widths = [state, *hidden]
    groups = _groups(list(zip(names, widths, strict=True)))
    blocks = [BlockShape(f"W{index + 1}", names[index + 1], names[index], hidden[index], widths[index], index + 1)
              for index in range(len(hidden))]
    blocks.append(BlockShape(f"W{len(hidden) + 1}", names[0], names[-1], state, hidden[-1], len(hidden) + 1))
    return blocks, groups


def _random_program(seed: int) -> tuple[list[BlockShape], list[StateGroup]]:
    """Random groups (names in shuffled sort order) and blocks between them, skips and shared columns included."""
    generator = random.Random(seed)
    names = [f"{generator.choice('abcxyz')}{index}" for index in range(generator.randint(2, 5))]
    groups = _groups([(name, generator.randint(1, 70)) for name in names])
    pairs = {(generator.choice(names), generator.choice(names)) for _ in range(generator.randint(1, 6))}
    size = {group.name: group.size for group in groups}
    blocks = [BlockShape(f"B{index}", row, column, size[row], size[column], generator.randint(1, 3))
              for index, (row, column) in enumerate(sorted(pairs))]
    return blocks, groups


CASES = [_chain(2, [16, 16], ["x", "h1", "h2"]), _chain(8, [100, 60], ["x", "h1", "h2"]),
         _chain(4, [48, 48, 48], ["zeta", "alpha", "mid", "beta"]), _chain(16, [256, 130], ["x", "h1", "h2"])]
CASES += [_random_program(seed) for seed in range(8)]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("layout", ["packed", "ring"])
def test_array_routing_equals_graph_routing(case: int, layout: str) -> None:
    blocks, groups = CASES[case]
    placement = place_blocks(blocks, PORTS, layout)
    graph_form = routing_to_json(routing_graph(placement, blocks, groups))
    written = routing_json(placement, blocks, groups).data
    assert written == (json.dumps(graph_form, sort_keys=True, separators=(",", ":")) + "\n").encode()
    assert json.loads(written) == graph_form


def test_a_port_carrying_two_channels_is_refused() -> None:
    blocks, groups = CASES[1]
    placement = place_blocks(blocks, PORTS, "packed")
    first, second = placement.tiles[0], placement.tiles[1]
    # Put the second tile on the first tile's ports: the placement check names it before routing does.
    moved = type(second)(**{**second.__dict__, "module": first.module, "input_port_start": first.input_port_start})
    broken = type(placement)(tuple([first, moved, *placement.tiles[2:]]), placement.modules_used,
                             placement.lower_bound, placement.layout, placement.solver, placement.ports)
    with pytest.raises(AdmcError):
        routing_json(broken, blocks, groups)
