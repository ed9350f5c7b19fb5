"""Tiling and module placement: cut the non-zero weight blocks into tiles and pack the tiles onto modules.

Requires: blocks (``BlockShape``, e.g. ``block_shapes(program.blocks)``) with positive row and column counts and
unique names; a module size ``ports`` (each module has ``ports`` LED inputs, ``ports`` photodetector outputs and a
ports × ports SLM).

Guarantees: every entry of every block is covered by exactly one tile; every tile is at most
ports × ports; the tiles placed on one module sit block-diagonally on its SLM (disjoint output-port ranges and
disjoint input-port ranges), so a module never receives more than ``ports`` rows or columns; in the ``ring``
layout no module holds tiles of two layers. The same input always gives the same placement, which lists the
placed blocks' names in their given order (``Placement.block_index`` looks a tile's block up there).
``check_placement`` raises AdmcError on the first broken guarantee.

Cutting is ``tile_cuts``; packing the tiles onto modules (first-fit-decreasing, or an exact integer program on
small instances) is ``tile_packing``. The ``solver`` field of the placement says which packing produced it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from admc.core.errors import AdmcError
from admc.ir.program import MatrixBlock, block_name
from admc.passes.tile_cuts import SPLIT_POLICIES, BlockShape, TileExtent, check_block, check_ports, split_into_tiles
from admc.passes.tile_packing import pack_first_fit_decreasing, pack_items

LAYOUTS = ("packed", "ring", "auto")


def block_shapes(blocks: Sequence[MatrixBlock]) -> list[BlockShape]:
    """The placement view of a program's blocks, each named by its index (``ir.program.block_name``)."""
    return [BlockShape(block_name(index), block.row_group, block.column_group, block.matrix.shape[0],
                       block.matrix.shape[1], block.layer) for index, block in enumerate(blocks)]


@dataclass(frozen=True)
class Tile(TileExtent):
    """A placed tile: block rows [row_start, row_stop) on output ports from ``output_port_start`` of
    ``module``, block columns [column_start, column_stop) on input ports from ``input_port_start``."""

    module: int
    output_port_start: int
    input_port_start: int

    @property
    def output_port_stop(self) -> int:
        return self.output_port_start + self.rows

    @property
    def input_port_stop(self) -> int:
        return self.input_port_start + self.columns


@dataclass(frozen=True)
class Placement:
    """Tiles on modules. ``lower_bound`` is ⌈max(Σrows, Σcols)/ports⌉ (the design's figure of merit);
    ``tile_lower_bound`` is the tighter bound that counts how often tiling must repeat rows and columns."""

    tiles: tuple[Tile, ...]
    modules_used: int
    lower_bound: int
    layout: str
    solver: str
    ports: int
    tile_lower_bound: int = 0
    # The placed blocks' names in the order they were given: where a tile's block is looked up by name (never
    # parsed from it). Not part of what a placement is: ``to_dict`` and equality leave it out.
    block_names: tuple[str, ...] = field(default=(), compare=False)

    def block_index(self, tile: Tile) -> int:
        """The position of ``tile``'s block among the blocks that were placed."""
        try:
            return self.block_names.index(tile.block)
        except ValueError:
            raise AdmcError(f"tile refers to block '{tile.block}', which is not among the placed blocks") from None

    def summary(self) -> dict[str, Any]:
        """Everything but the tiles (a manifest's record: ``asdict`` of 15,000 tiles at 36M weights took 1.7 s)."""
        return {
            "layout": self.layout,
            "solver": self.solver,
            "ports": self.ports,
            "modules_used": self.modules_used,
            "lower_bound": self.lower_bound,
            "tile_lower_bound": self.tile_lower_bound,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "tiles": [asdict(tile) for tile in self.tiles]}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Placement:
        try:
            tiles = tuple(Tile(**tile) for tile in data["tiles"])
            return Placement(tiles, int(data["modules_used"]), int(data["lower_bound"]), str(data["layout"]),
                             str(data["solver"]), int(data["ports"]), int(data.get("tile_lower_bound", 0)))
        except (KeyError, TypeError) as error:
            raise AdmcError(f"placement data is malformed: {error}") from error


# --------------------------------------------------------------------------------------------- bounds


def lower_bound(blocks: Sequence[BlockShape], ports: int) -> int:
    """⌈max(Σ rows, Σ columns) / ports⌉ over all blocks.

    Valid with tiling too: every block row lands on at least one output port (a tile of a column split
    repeats the row, which only uses more ports) and a module has ``ports`` output ports, so the modules
    together need Σ rows ≤ modules · ports; the same holds for columns and input ports.
    """
    check_ports(ports)
    if not blocks:
        return 0
    return math.ceil(max(sum(b.rows for b in blocks), sum(b.columns for b in blocks)) / ports)


def tile_lower_bound(blocks: Sequence[BlockShape], ports: int) -> int:
    """A tighter valid bound: a block row with c columns appears in at least ⌈c/ports⌉ tiles (a tile has at
    most ``ports`` columns), each using one output port; likewise for columns. It implies the area bound
    ⌈Σ rows·cols / ports²⌉ and the plain ``lower_bound``. Assumes no port sharing between tiles."""
    check_ports(ports)
    if not blocks:
        return 0
    output_ports = sum(b.rows * math.ceil(b.columns / ports) for b in blocks)
    input_ports = sum(b.columns * math.ceil(b.rows / ports) for b in blocks)
    return math.ceil(max(output_ports, input_ports) / ports)



# ------------------------------------------------------------------------------------------- placement


def _tiling_for(blocks: Sequence[BlockShape], ports: int, policies: Sequence[str]) -> list[TileExtent]:
    return [extent for block, policy in zip(blocks, policies, strict=True)
            for extent in split_into_tiles(block, ports, policy)]


def choose_tiling(blocks: Sequence[BlockShape], ports: int) -> list[TileExtent]:
    """The tiling that first-fit-decreasing packs into the fewest modules: each uniform policy, then
    block-by-block changes of policy that strictly reduce the count (first policy wins ties)."""
    names = list(SPLIT_POLICIES)
    # A block's tiles under a policy, cut once (the search tries each many times): how many are full
    # ports × ports tiles, and the sizes of the others. First-fit-decreasing gives each full tile a bin of its
    # own before placing the rest, in the rest's own order, so the count is the full tiles plus the rest's
    # bins, and the search never re-packs the thousands of full tiles of a large network.
    sizes: dict = {}

    def bins(policies: Sequence[str]) -> int:
        full, rest = 0, []
        for position, policy in enumerate(policies):
            if (position, policy) not in sizes:
                extents = _tiling_for([blocks[position]], ports, [policy])
                cut = [(extent.rows, extent.columns) for extent in extents]
                sizes[position, policy] = (sum(item == (ports, ports) for item in cut),
                                           [item for item in cut if item != (ports, ports)])
            full += sizes[position, policy][0]
            rest.extend(sizes[position, policy][1])
        return full + max(pack_first_fit_decreasing(rest, ports), default=-1) + 1

    best_policies = min(([name] * len(blocks) for name in names), key=bins)
    best_bins = bins(best_policies)
    improved = True
    while improved:
        improved = False
        for position in range(len(blocks)):
            for name in names:
                trial = list(best_policies)
                trial[position] = name
                trial_bins = bins(trial)
                if trial_bins < best_bins:
                    best_policies, best_bins, improved = trial, trial_bins, True
    return _tiling_for(blocks, ports, best_policies)


def _place_group(blocks: Sequence[BlockShape], ports: int, first_module: int) -> tuple[list[Tile], int, str]:
    """Tile and pack one set of blocks onto modules first_module, first_module + 1, ..."""
    extents = choose_tiling(blocks, ports)
    bound = tile_lower_bound(blocks, ports)
    assignment, solver = pack_items([(e.rows, e.columns) for e in extents], ports, bound)
    next_output = [0] * (max(assignment, default=-1) + 1)
    next_input = list(next_output)
    tiles = []
    # Ports are handed out in tile order inside each module: consecutive, disjoint ranges.
    for extent, bin_index in zip(extents, assignment, strict=True):
        tiles.append(Tile(extent.block, extent.row_start, extent.row_stop, extent.column_start,
                          extent.column_stop, first_module + bin_index, next_output[bin_index],
                          next_input[bin_index]))
        next_output[bin_index] += extent.rows
        next_input[bin_index] += extent.columns
    return tiles, len(next_output), solver


def _combine_solvers(solvers: Sequence[str]) -> str:
    return " + ".join(sorted(set(solvers))) if solvers else "none"


def _place_layout(blocks: Sequence[BlockShape], ports: int, layout: str) -> tuple[list[Tile], int, str]:
    if layout == "packed":
        tiles, modules, solver = _place_group(blocks, ports, 0)
        return tiles, modules, solver
    tiles, modules, solvers = [], 0, []
    for layer in sorted({block.layer for block in blocks}):
        layer_blocks = [block for block in blocks if block.layer == layer]
        layer_tiles, layer_modules, solver = _place_group(layer_blocks, ports, modules)
        tiles += layer_tiles
        modules += layer_modules
        solvers.append(solver)
    return tiles, modules, _combine_solvers(solvers)


def place_blocks(blocks: Sequence[BlockShape], ports: int, layout: str = "auto",
                 modules_available: int | None = None) -> Placement:
    """Tile the blocks and place the tiles on modules.

    ``packed``: all tiles share modules freely. ``ring``: each layer gets its own modules (the paper's
    Fig. 1a). ``auto``: whichever uses fewer modules, ``packed`` on a tie. Raises AdmcError when more than
    ``modules_available`` modules would be needed (None: unlimited).
    """
    check_ports(ports)
    if layout not in LAYOUTS:
        raise AdmcError(f"unknown layout '{layout}' (expected one of {', '.join(LAYOUTS)})")
    names = [block.name for block in blocks]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise AdmcError(f"block names must be unique; repeated: {', '.join(duplicates)}")
    for block in blocks:
        check_block(block)
    if layout == "auto":
        packed = _place_layout(blocks, ports, "packed")
        ring = _place_layout(blocks, ports, "ring")
        (tiles, modules, solver), chosen = (ring, "ring") if ring[1] < packed[1] else (packed, "packed")
    else:
        (tiles, modules, solver), chosen = _place_layout(blocks, ports, layout), layout
    bound = lower_bound(blocks, ports)
    if modules_available is not None and modules > modules_available:
        raise AdmcError(f"the {chosen} layout needs {modules} modules but only {modules_available} are "
                        f"available (lower bound {bound})")
    return Placement(tuple(tiles), modules, bound, chosen, solver, ports, tile_lower_bound(blocks, ports),
                     tuple(names))



# ------------------------------------------------------------------------------------------ validation


def check_placement(placement: Placement, blocks: Sequence[BlockShape]) -> None:
    """Raise AdmcError unless the tiles cover every block entry exactly once, fit the module, and sit on
    disjoint port ranges of their module (and, for ``ring``, never mix layers on one module)."""
    by_name = {block.name: block for block in blocks}
    ports = placement.ports
    covered: dict[str, int] = {name: 0 for name in by_name}
    per_module: dict[int, list[Tile]] = {}
    for tile in placement.tiles:
        block = by_name.get(tile.block)
        if block is None:
            raise AdmcError(f"tile refers to unknown block '{tile.block}'")
        if not (0 <= tile.row_start < tile.row_stop <= block.rows
                and 0 <= tile.column_start < tile.column_stop <= block.columns):
            raise AdmcError(f"tile of block '{tile.block}' lies outside the block's {block.rows} × "
                            f"{block.columns} entries")
        if not (0 <= tile.module < placement.modules_used):
            raise AdmcError(f"tile of block '{tile.block}' is on module {tile.module}, outside 0.."
                            f"{placement.modules_used - 1}")
        if tile.output_port_start < 0 or tile.output_port_stop > ports or tile.input_port_start < 0 \
                or tile.input_port_stop > ports:
            raise AdmcError(f"tile of block '{tile.block}' on module {tile.module} uses ports beyond {ports}")
        covered[tile.block] += tile.rows * tile.columns
        per_module.setdefault(tile.module, []).append(tile)
    for name, block in by_name.items():
        if covered[name] != block.rows * block.columns:
            raise AdmcError(f"tiles cover {covered[name]} entries of block '{name}', which has "
                            f"{block.rows * block.columns}")
    # Equal areas and no overlap between tiles of a block mean exact cover; overlap is checked per block.
    for name in by_name:
        rectangles = [t for t in placement.tiles if t.block == name]
        _check_disjoint([(t.row_start, t.row_stop, t.column_start, t.column_stop) for t in rectangles],
                        f"tiles of block '{name}' overlap")
    for module in sorted(per_module):
        tiles = per_module[module]
        _check_disjoint_ranges([(t.output_port_start, t.output_port_stop) for t in tiles],
                               f"module {module}: two tiles share output ports")
        _check_disjoint_ranges([(t.input_port_start, t.input_port_stop) for t in tiles],
                               f"module {module}: two tiles share input ports")
        if placement.layout == "ring" and len({by_name[t.block].layer for t in tiles}) > 1:
            raise AdmcError(f"ring layout mixes layers on module {module}")


def _check_disjoint_ranges(ranges: Sequence[tuple[int, int]], message: str) -> None:
    ordered = sorted(ranges)
    for (_, first_stop), (second_start, _) in zip(ordered, ordered[1:], strict=False):
        if second_start < first_stop:
            raise AdmcError(message)


def _check_disjoint(rectangles: Sequence[tuple[int, int, int, int]], message: str) -> None:
    ordered = sorted(rectangles)
    for index, (r0, r1, c0, c1) in enumerate(ordered):
        for s0, s1, d0, d1 in ordered[index + 1:]:
            if s0 >= r1:
                break
            if s0 < r1 and r0 < s1 and d0 < c1 and c0 < d1:
                raise AdmcError(message)



# ----------------------------------------------------------------------------------------- dead ports


def live_segment(ports: int, unusable: Sequence[int]) -> tuple[int, int]:
    """(start, length) of the longest run of consecutive ports containing no unusable one (first on ties)."""
    dead = sorted({int(port) for port in unusable if 0 <= int(port) < ports})
    best, start = (0, 0), 0
    for stop in [*dead, ports]:
        if stop - start > best[1]:
            best = (start, stop - start)
        start = stop + 1
    return best


def place_blocks_avoiding(blocks: Sequence[BlockShape], ports: int, layout: str = "auto",
                          modules_available: int | None = None, unusable_inputs: Sequence[int] = (),
                          unusable_outputs: Sequence[int] = ()) -> Placement:
    """:func:`place_blocks` that never puts a weight on an unusable port (a dead LED or detector).

    Tiles need contiguous port ranges, so every module uses the longest live run of input ports and of output
    ports, the same width on both sides (the smaller run): placement runs on modules of that width and the
    tiles are shifted into the runs. Guarantees: no tile's input range holds an unusable input port and no
    output range an unusable output port; the placement reports the physical ``ports``. With no unusable
    port this is exactly :func:`place_blocks`.
    """
    if not unusable_inputs and not unusable_outputs:
        return place_blocks(blocks, ports, layout, modules_available)
    input_start, input_width = live_segment(ports, unusable_inputs)
    output_start, output_width = live_segment(ports, unusable_outputs)
    width = min(input_width, output_width)
    if width < 1:
        raise AdmcError(f"no usable port on a {ports}-port module (unusable inputs {sorted(unusable_inputs)}, "
                        f"outputs {sorted(unusable_outputs)})")
    placement = place_blocks(blocks, width, layout, modules_available)
    tiles = tuple(replace(tile, input_port_start=tile.input_port_start + input_start,
                          output_port_start=tile.output_port_start + output_start) for tile in placement.tiles)
    return replace(placement, tiles=tiles, ports=ports)
