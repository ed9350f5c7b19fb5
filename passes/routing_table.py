"""The routing of a placement as sorted arrays, and its JSON, without a graph of Python objects (issue 25).

Requires: a ``Placement`` that ``tiling.check_placement`` accepts for the given blocks (``BlockShape``), and the
program's state groups with unique string names (``routing._index_inputs`` checks them).

Guarantees: ``routing_json(placement, blocks, groups).data`` is the file ``aoc/routing.json``: byte for byte
``json.dumps(routing_to_json(routing_graph(placement, blocks, groups)), sort_keys=True, separators=(",", ":"))``
and a newline (``routing.py``, the graph form the RRAM target and the checks use), so the bundle bytes do not
depend on which one wrote them. The text is written straight from the arrays: at 36M weights the graph's
Python objects, or even a list of node dicts, cost tens of seconds; this costs a few array sorts over the
ports (a 36M-weight program uses ~1.5M) and one formatted string each. It raises AdmcError if one port would
carry two channels (the routing would be wrong), which a checked placement never gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import StateGroup
from admc.passes.routing import ROUTING_FORMAT, ROUTING_VERSION, _index_inputs
from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import Placement, check_placement


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of ``counts`` entries: the run each entry belongs to and its offset within the run."""
    owner = np.repeat(np.arange(counts.size), counts)
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, starts[owner] + offsets


def _ports(module: np.ndarray, port: np.ndarray, tile: np.ndarray, group: np.ndarray, index: np.ndarray,
           kind: str) -> tuple[list[str], np.ndarray]:
    """Port nodes sorted by (module, port) as JSON text with their sorted tile lists, and per port the
    (module, port, group, index) of the channel it carries."""
    order = np.lexsort((tile, port, module))
    module, port, tile, group, index = (values[order] for values in (module, port, tile, group, index))
    first = np.ones(module.size, dtype=bool)
    first[1:] = (module[1:] != module[:-1]) | (port[1:] != port[:-1])
    starts = np.flatnonzero(first)
    carried = np.stack([group, index], axis=1)
    if np.any(np.any(carried[1:] != carried[:-1], axis=1) & ~first[1:]):
        raise AdmcError(f"routing: a {kind.replace('_', ' ')} would carry two channels")
    heads = zip(module[starts].tolist(), port[starts].tolist(), strict=True)
    if starts.size == module.size:  # one tile per port, as a checked placement gives
        tiles = (str(value) for value in tile.tolist())
    else:
        ends = np.append(starts[1:], module.size).tolist()
        listed = tile.tolist()
        tiles = (",".join(map(str, sorted(set(listed[start:end])))) for start, end in zip(starts.tolist(), ends,
                                                                                          strict=True))
    nodes = [f'{{"id":["{kind}",{m},{p}],"tiles":[{t}]}}' for (m, p), t in zip(heads, tiles, strict=True)]
    return nodes, np.stack([module[starts], port[starts], group[starts], index[starts]], axis=1)


@dataclass(frozen=True)
class RoutingFile:
    """The bytes of the routing file, and how many nodes and edges it lists (what an IR dump shows of it)."""

    data: bytes = field(metadata={"ir": False})
    nodes: int
    edges: int


def routing_json(placement: Placement, blocks: Sequence[BlockShape], groups: Sequence[StateGroup]) -> RoutingFile:
    """The routing of ``placement``: the bytes of ``aoc/routing.json`` (see the module docstring)."""
    block_by_name, _ = _index_inputs(blocks, groups)
    check_placement(placement, blocks)
    names = sorted(group.name for group in groups)
    rank = {name: position for position, name in enumerate(names)}
    quoted = [json.dumps(name) for name in names]
    tiles = placement.tiles
    tile_blocks = [block_by_name[tile.block] for tile in tiles]

    def per_tile(values) -> np.ndarray:
        return np.fromiter(values, dtype=np.int64, count=len(tiles))

    module = per_tile(tile.module for tile in tiles)
    columns, rows = per_tile(tile.columns for tile in tiles), per_tile(tile.rows for tile in tiles)
    column_tile, input_port = _expand(per_tile(tile.input_port_start for tile in tiles), columns)
    _, column = _expand(per_tile(tile.column_start for tile in tiles), columns)
    row_tile, output_port = _expand(per_tile(tile.output_port_start for tile in tiles), rows)
    _, row = _expand(per_tile(tile.row_start for tile in tiles), rows)
    column_group = per_tile(rank[block.column_group] for block in tile_blocks)[column_tile]
    row_group = per_tile(rank[block.row_group] for block in tile_blocks)[row_tile]
    inputs, input_edges = _ports(module[column_tile], input_port, column_tile, column_group, column, "input_port")
    outputs, output_edges = _ports(module[row_tile], output_port, row_tile, row_group, row, "output_port")

    sizes = {group.name: (group.offset, group.size) for group in groups}
    channels = [f'{{"channel":{sizes[name][0] + index},"id":["channel",{quoted[position]},{index}]}}'
                for position, name in enumerate(names) for index in range(sizes[name][1])]
    written = sorted({(rank[block.row_group], row) for block in blocks for row in range(block.rows)})
    sums = [f'{{"id":["sum",{quoted[g]},{i}]}}' for g, i in written]

    # channel → input port, sorted by (channel, port); output port → sum by (port, sum); sum → channel.
    to_input = input_edges[np.lexsort((input_edges[:, 1], input_edges[:, 0], input_edges[:, 3], input_edges[:, 2]))]
    edges = [f'[["channel",{quoted[g]},{i}],["input_port",{m},{p}]]' for m, p, g, i in to_input.tolist()]
    edges += [f'[["output_port",{m},{p}],["sum",{quoted[g]},{i}]]' for m, p, g, i in output_edges.tolist()]
    edges += [f'[["sum",{quoted[g]},{i}],["channel",{quoted[g]},{i}]]' for g, i in written]
    # json.dumps(sort_keys=True, separators=(",", ":")) of the graph form, key order edges, format, nodes, version.
    text = (f'{{"edges":[{",".join(edges)}],"format":{json.dumps(ROUTING_FORMAT)},'
            f'"nodes":[{",".join(channels + inputs + outputs + sums)}],"version":{ROUTING_VERSION}}}\n')
    return RoutingFile(text.encode("utf-8"), len(channels) + len(inputs) + len(outputs) + len(sums), len(edges))
