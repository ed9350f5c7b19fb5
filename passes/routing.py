"""Routing: which state channel drives which LED, and which photodetectors sum into which channel.

Requires: a ``Placement`` from ``admc.passes.tiling`` whose tiles refer to the given blocks (``BlockShape``),
blocks whose row and column counts equal the sizes of their row and column groups, and the program's state
groups (``ir.program.StateGroup``) with unique names.

Guarantees: ``routing_graph`` is a ``networkx.DiGraph`` with nodes
  ("channel", group, index)      every state channel, attribute ``channel`` (absolute index),
  ("input_port", module, port)   every LED a tile uses, attribute ``tiles`` (indices into placement.tiles),
  ("output_port", module, port)  every photodetector a tile uses, attribute ``tiles``,
  ("sum", group, index)          one per destination channel (a row of some block),
and edges channel → input_port (the channel drives that LED through σ), output_port → sum (the partial
output of a tile row), sum → channel (the summed current is that channel's input). Tile-internal
input → output connections are recorded by the ``tiles`` attribute instead of edges: a 48 × 48 tile would
otherwise add 2,304 edges that say nothing the tile does not already say.
``check_routing`` raises AdmcError on the first broken invariant; ``routing_to_json`` and
``routing_from_json`` round-trip the graph through JSON-able data in a deterministic order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import networkx as nx

from admc.core.errors import AdmcError
from admc.ir.program import StateGroup
from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import Placement, check_placement

NODE_KINDS = ("channel", "input_port", "output_port", "sum")
# The only edge kinds a routing graph may have, as (source kind, target kind).
EDGE_KINDS = {("channel", "input_port"), ("output_port", "sum"), ("sum", "channel")}
ROUTING_FORMAT = "admc-routing"
ROUTING_VERSION = 1


def _index_inputs(blocks: Sequence[BlockShape],
                  groups: Sequence[StateGroup]) -> tuple[dict[str, BlockShape], dict[str, StateGroup]]:
    """Look-up tables, after checking that groups tile the state and blocks match their groups."""
    group_by_name: dict[str, StateGroup] = {}
    offset = 0
    for group in groups:
        if group.name in group_by_name:
            raise AdmcError(f"state group '{group.name}' appears twice")
        if group.offset != offset or group.size < 1:
            raise AdmcError(f"state group '{group.name}' has offset {group.offset} and size {group.size}; "
                            f"expected offset {offset} and size ≥ 1 (groups are contiguous from 0)")
        group_by_name[group.name] = group
        offset += group.size
    block_by_name: dict[str, BlockShape] = {}
    for block in blocks:
        for role, name, count in (("row", block.row_group, block.rows),
                                  ("column", block.column_group, block.columns)):
            group = group_by_name.get(name)
            if group is None:
                raise AdmcError(f"block '{block.name}' names unknown {role} group '{name}'")
            if group.size != count:
                raise AdmcError(f"block '{block.name}' has {count} {role}s but its {role} group '{name}' has "
                                f"{group.size} channels")
        block_by_name[block.name] = block
    return block_by_name, group_by_name


def routing_graph(placement: Placement, blocks: Sequence[BlockShape],
                  groups: Sequence[StateGroup]) -> nx.DiGraph:
    """Build the routing graph of ``placement`` (see the module docstring for its nodes and edges)."""
    block_by_name, _ = _index_inputs(blocks, groups)
    graph = nx.DiGraph()
    for group in groups:
        for index in range(group.size):
            graph.add_node(("channel", group.name, index), channel=group.offset + index)
    destinations = sorted({(block.row_group, row) for block in blocks for row in range(block.rows)},
                          key=lambda key: (_group_position(groups, key[0]), key[1]))
    for group_name, index in destinations:
        graph.add_edge(("sum", group_name, index), ("channel", group_name, index))
    for tile_index, tile in enumerate(placement.tiles):
        block = block_by_name.get(tile.block)
        if block is None:
            raise AdmcError(f"tile {tile_index} refers to unknown block '{tile.block}'")
        for offset in range(tile.columns):
            port = ("input_port", tile.module, tile.input_port_start + offset)
            _add_tile(graph, port, tile_index)
            graph.add_edge(("channel", block.column_group, tile.column_start + offset), port)
        for offset in range(tile.rows):
            port = ("output_port", tile.module, tile.output_port_start + offset)
            _add_tile(graph, port, tile_index)
            graph.add_edge(port, ("sum", block.row_group, tile.row_start + offset))
    return graph


def _group_position(groups: Sequence[StateGroup], name: str) -> int:
    return next(position for position, group in enumerate(groups) if group.name == name)


def _add_tile(graph: nx.DiGraph, node: tuple, tile_index: int) -> None:
    if node in graph:
        graph.nodes[node]["tiles"] = sorted({*graph.nodes[node].get("tiles", []), tile_index})
    else:
        graph.add_node(node, tiles=[tile_index])


def check_routing(graph: nx.DiGraph, placement: Placement, blocks: Sequence[BlockShape],
                  groups: Sequence[StateGroup]) -> None:
    """Raise AdmcError unless ``graph`` routes ``placement`` correctly.

    Checked: the placement itself (exact cover, ports, disjoint port ranges); only known node and edge
    kinds; every destination channel has exactly one sum node, which feeds only that channel; no sum node
    for a channel that no block writes; every tile's input ports are driven by exactly one channel, the
    tile's own column channel; no port is used by different channels; every output port feeds exactly one
    sum node, that of the tile's own row channel; every port node belongs to some tile.
    """
    block_by_name, _ = _index_inputs(blocks, groups)
    check_placement(placement, blocks)
    for node in sorted(graph.nodes, key=_node_sort_key):
        if not (isinstance(node, tuple) and len(node) == 3 and node[0] in NODE_KINDS):
            raise AdmcError(f"routing graph has an unknown node {node!r}")
    for source, target in sorted(graph.edges, key=lambda edge: (_node_sort_key(edge[0]), _node_sort_key(edge[1]))):
        if (source[0], target[0]) not in EDGE_KINDS:
            raise AdmcError(f"routing graph has an edge {source} → {target} of a kind it may not have")
    destinations = {(block.row_group, row) for block in blocks for row in range(block.rows)}
    for group in groups:
        for index in range(group.size):
            channel = ("channel", group.name, index)
            if channel not in graph:
                raise AdmcError(f"routing graph lacks channel {index} of group '{group.name}'")
            sums = [node for node in graph.predecessors(channel) if node[0] == "sum"]
            expected = 1 if (group.name, index) in destinations else 0
            if len(sums) != expected:
                raise AdmcError(f"channel {index} of group '{group.name}' has {len(sums)} sum nodes; "
                                f"expected {expected}")
            if sums and sums[0] != ("sum", group.name, index):
                raise AdmcError(f"channel {index} of group '{group.name}' is fed by the sum node of {sums[0]}")
    for node in graph.nodes:
        if node[0] == "sum" and graph.out_degree(node) != 1:
            raise AdmcError(f"sum node {node[1:]} feeds {graph.out_degree(node)} channels; expected 1")
        if node[0] == "sum" and graph.in_degree(node) == 0:
            raise AdmcError(f"sum node {node[1:]} receives no photodetector output")
    expected_driver: dict[tuple, tuple] = {}
    for tile_index, tile in enumerate(placement.tiles):
        block = block_by_name[tile.block]
        for offset in range(tile.columns):
            port = ("input_port", tile.module, tile.input_port_start + offset)
            want = ("channel", block.column_group, tile.column_start + offset)
            _check_port(graph, port, want, tile_index, expected_driver, incoming=True)
        for offset in range(tile.rows):
            port = ("output_port", tile.module, tile.output_port_start + offset)
            want = ("sum", block.row_group, tile.row_start + offset)
            _check_port(graph, port, want, tile_index, expected_driver, incoming=False)
    for node in sorted(graph.nodes, key=_node_sort_key):
        if node[0] in ("input_port", "output_port") and node not in expected_driver:
            raise AdmcError(f"{node[0].replace('_', ' ')} {node[2]} of module {node[1]} belongs to no tile")


def _check_port(graph: nx.DiGraph, port: tuple, want: tuple, tile_index: int,
                expected_driver: dict[tuple, tuple], incoming: bool) -> None:
    """One port of one tile: present, connected to exactly ``want``, and not claimed for another channel."""
    kind = port[0].replace("_", " ")
    where = f"{kind} {port[2]} of module {port[1]} (tile {tile_index})"
    if port not in graph:
        raise AdmcError(f"routing graph lacks {where}")
    if expected_driver.setdefault(port, want) != want:
        raise AdmcError(f"{where} is used for both {expected_driver[port][1:]} and {want[1:]}")
    neighbours = list(graph.predecessors(port) if incoming else graph.successors(port))
    if neighbours != [want]:
        role = "driven by" if incoming else "feeding"
        raise AdmcError(f"{where} is {role} {len(neighbours)} node(s) {neighbours}; expected exactly {want}")
    if tile_index not in graph.nodes[port].get("tiles", []):
        raise AdmcError(f"{where} does not list its tile")


def _node_sort_key(node: Hashable) -> tuple:
    """Deterministic order over mixed node keys: kind order, then ints before strings in each field."""
    if not isinstance(node, tuple):
        return (len(NODE_KINDS), (1, repr(node)))
    kind = NODE_KINDS.index(node[0]) if node and node[0] in NODE_KINDS else len(NODE_KINDS)
    return (kind, *[(0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in node[1:]])


def routing_to_json(graph: nx.DiGraph) -> dict[str, Any]:
    """Node-link data: nodes and edges as [kind, a, b] lists, sorted, attributes as plain JSON values."""
    nodes = []
    for node in sorted(graph.nodes, key=_node_sort_key):
        entry: dict[str, Any] = {"id": list(node)}
        for name in sorted(graph.nodes[node]):
            value = graph.nodes[node][name]
            entry[name] = list(value) if isinstance(value, (list, tuple)) else value
        nodes.append(entry)
    edges = [[list(source), list(target)] for source, target in
             sorted(graph.edges, key=lambda edge: (_node_sort_key(edge[0]), _node_sort_key(edge[1])))]
    return {"format": ROUTING_FORMAT, "version": ROUTING_VERSION, "nodes": nodes, "edges": edges}


def routing_from_json(data: dict[str, Any]) -> nx.DiGraph:
    """Inverse of ``routing_to_json``."""
    if not isinstance(data, dict) or data.get("format") != ROUTING_FORMAT:
        raise AdmcError(f"routing data is not in the '{ROUTING_FORMAT}' format")
    if data.get("version") != ROUTING_VERSION:
        raise AdmcError(f"routing data has version {data.get('version')!r}; this admc reads {ROUTING_VERSION}")
    graph = nx.DiGraph()
    try:
        for entry in data["nodes"]:
            attributes = {name: value for name, value in entry.items() if name != "id"}
            graph.add_node(_node_from_json(entry["id"]), **attributes)
        for source, target in data["edges"]:
            source_node, target_node = _node_from_json(source), _node_from_json(target)
            for node in (source_node, target_node):
                if node not in graph:
                    raise AdmcError(f"routing data has an edge to undeclared node {list(node)}")
            graph.add_edge(source_node, target_node)
    except (KeyError, TypeError, ValueError) as error:
        raise AdmcError(f"routing data is malformed: {error!r}") from error
    return graph


def _node_from_json(identifier: Any) -> tuple:
    if not (isinstance(identifier, list) and len(identifier) == 3 and identifier[0] in NODE_KINDS):
        raise AdmcError(f"routing data has a malformed node id {identifier!r}")
    return tuple(identifier)
