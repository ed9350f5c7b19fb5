"""Tiling and module placement: cut the non-zero weight blocks into tiles and pack the tiles onto modules.

Requires: blocks (``MatrixBlock``) with positive row and column counts and unique names; a module size
``ports`` (each module has ``ports`` LED inputs, ``ports`` photodetector outputs and a ports × ports SLM).

Guarantees: every entry of every block is covered by exactly one tile; every tile is at most
ports × ports; the tiles placed on one module sit block-diagonally on its SLM (disjoint output-port ranges and
disjoint input-port ranges), so a module never receives more than ``ports`` rows or columns; in the ``ring``
layout no module holds tiles of two layers. The same input always gives the same placement.

The packing is 2-D vector bin packing: a tile of r rows and c columns uses r output ports and c input ports.
Small instances are solved exactly as an integer program (cvxpy + HiGHS, with a deterministic node limit);
larger ones use first-fit-decreasing. The ``solver`` field of the placement says which one produced it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from admc.core.errors import AdmcError
from admc.core.native_output import native_stdout_silenced

LAYOUTS = ("packed", "ring", "auto")
# Beyond this many tiles in one packing problem the integer program is replaced by first-fit-decreasing:
# x[item, bin] has items × bins binaries, and HiGHS stays well below a second up to about this size.
EXACT_ITEM_LIMIT = 40
# A node limit (not only a time limit) keeps the exact solver deterministic: the same input explores the
# same branch-and-bound tree whatever the machine's speed. The time limit is only a safety net.
EXACT_NODE_LIMIT = 2000
EXACT_TIME_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class StateGroup:
    """A contiguous range of state channels: channels ``offset .. offset + size - 1``."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class MatrixBlock:
    """A non-zero block of the weight matrix: row_group channels ← W · σ(column_group channels)."""

    name: str
    row_group: str
    column_group: str
    rows: int
    columns: int
    layer: int


@dataclass(frozen=True)
class TileExtent:
    """A rectangle of one block, before it has a module: block rows [row_start, row_stop) × columns."""

    block: str
    row_start: int
    row_stop: int
    column_start: int
    column_stop: int

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start

    @property
    def columns(self) -> int:
        return self.column_stop - self.column_start


@dataclass(frozen=True)
class Tile:
    """A placed tile: block rows [row_start, row_stop) on output ports from ``output_port_start`` of
    ``module``, block columns [column_start, column_stop) on input ports from ``input_port_start``."""

    block: str
    row_start: int
    row_stop: int
    column_start: int
    column_stop: int
    module: int
    output_port_start: int
    input_port_start: int

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start

    @property
    def columns(self) -> int:
        return self.column_stop - self.column_start

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "solver": self.solver,
            "ports": self.ports,
            "modules_used": self.modules_used,
            "lower_bound": self.lower_bound,
            "tile_lower_bound": self.tile_lower_bound,
            "tiles": [asdict(tile) for tile in self.tiles],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Placement:
        try:
            tiles = tuple(Tile(**tile) for tile in data["tiles"])
            return Placement(tiles, int(data["modules_used"]), int(data["lower_bound"]), str(data["layout"]),
                             str(data["solver"]), int(data["ports"]), int(data.get("tile_lower_bound", 0)))
        except (KeyError, TypeError) as error:
            raise AdmcError(f"placement data is malformed: {error}") from error


# --------------------------------------------------------------------------------------------- bounds


def lower_bound(blocks: Sequence[MatrixBlock], ports: int) -> int:
    """⌈max(Σ rows, Σ columns) / ports⌉ over all blocks.

    Valid with tiling too: every block row lands on at least one output port (a tile of a column split
    repeats the row, which only uses more ports) and a module has ``ports`` output ports, so the modules
    together need Σ rows ≤ modules · ports; the same holds for columns and input ports.
    """
    _check_ports(ports)
    if not blocks:
        return 0
    return math.ceil(max(sum(b.rows for b in blocks), sum(b.columns for b in blocks)) / ports)


def tile_lower_bound(blocks: Sequence[MatrixBlock], ports: int) -> int:
    """A tighter valid bound: a block row with c columns appears in at least ⌈c/ports⌉ tiles (a tile has at
    most ``ports`` columns), each using one output port; likewise for columns. It implies the area bound
    ⌈Σ rows·cols / ports²⌉ and the plain ``lower_bound``. Assumes no port sharing between tiles."""
    _check_ports(ports)
    if not blocks:
        return 0
    output_ports = sum(b.rows * math.ceil(b.columns / ports) for b in blocks)
    input_ports = sum(b.columns * math.ceil(b.rows / ports) for b in blocks)
    return math.ceil(max(output_ports, input_ports) / ports)


# ---------------------------------------------------------------------------------------------- tiling


def _greedy_parts(length: int, cap: int) -> list[int]:
    """Full parts of ``cap`` then the remainder: full tiles fill a module side exactly."""
    parts = [cap] * (length // cap)
    if length % cap:
        parts.append(length % cap)
    return parts


def _balanced_parts(length: int, cap: int) -> list[int]:
    """⌈length/cap⌉ parts differing by at most one, larger first."""
    count = math.ceil(length / cap)
    base, extra = divmod(length, count)
    return [base + 1] * extra + [base] * (count - extra)


def _ranges(parts: Sequence[int], start: int = 0) -> list[tuple[int, int]]:
    ranges = []
    for part in parts:
        ranges.append((start, start + part))
        start += part
    return ranges


def _grid(block: MatrixBlock, row_parts: Sequence[int], column_parts: Sequence[int],
          row_start: int = 0, column_start: int = 0) -> list[TileExtent]:
    return [TileExtent(block.name, r0, r1, c0, c1)
            for r0, r1 in _ranges(row_parts, row_start) for c0, c1 in _ranges(column_parts, column_start)]


def _split_strip(block: MatrixBlock, ports: int, parts: Callable[[int, int], list[int]]) -> list[TileExtent]:
    """Full ports × ports tiles, and remainder strips cut so that a strip tile of the right edge and one of
    the bottom edge fill a module together: the right strip (s_c columns wide) is cut into row parts of at
    most ports − s_r, the bottom strip (s_r rows high) into column parts of at most ports − s_c."""
    full_rows, remainder_rows = divmod(block.rows, ports)
    full_columns, remainder_columns = divmod(block.columns, ports)
    tiles = _grid(block, [ports] * full_rows, [ports] * full_columns)
    if remainder_columns and full_rows:
        cap = ports - remainder_rows if remainder_rows else ports
        tiles += _grid(block, parts(full_rows * ports, cap), [remainder_columns],
                       column_start=full_columns * ports)
    if remainder_rows and full_columns:
        cap = ports - remainder_columns if remainder_columns else ports
        tiles += _grid(block, [remainder_rows], parts(full_columns * ports, cap),
                       row_start=full_rows * ports)
    if remainder_rows and remainder_columns:
        tiles += _grid(block, [remainder_rows], [remainder_columns],
                       row_start=full_rows * ports, column_start=full_columns * ports)
    return tiles


def _split_complement(block: MatrixBlock, ports: int,
                      parts: Callable[[int, int], list[int]]) -> list[TileExtent]:
    """For a thin block (one side at most ports/2), cut the long side into parts of at most
    ports − short side, so each tile leaves room for a thin tile of the transposed shape (in an ADM chain
    the first block is hidden × d and the closing block d × hidden: their tiles pair up on one module)."""
    if block.rows <= ports and block.columns <= ports:
        return _grid(block, [block.rows], [block.columns])
    if block.columns * 2 <= ports:
        return _grid(block, parts(block.rows, ports - block.columns), [block.columns])
    if block.rows * 2 <= ports:
        return _grid(block, [block.rows], parts(block.columns, ports - block.rows))
    return _split_strip(block, ports, parts)


SPLIT_POLICIES: dict[str, Callable[[MatrixBlock, int], list[TileExtent]]] = {
    "full": lambda block, ports: _grid(block, _greedy_parts(block.rows, ports),
                                       _greedy_parts(block.columns, ports)),
    "balanced": lambda block, ports: _grid(block, _balanced_parts(block.rows, ports),
                                           _balanced_parts(block.columns, ports)),
    # Greedy strip cuts leave one short remainder per strip, and remainders of several strips fill a module
    # together; balanced cuts make all strip tiles alike. Which wins depends on the shapes, so both exist.
    "strip": lambda block, ports: _split_strip(block, ports, _greedy_parts),
    "strip-balanced": lambda block, ports: _split_strip(block, ports, _balanced_parts),
    "complement": lambda block, ports: _split_complement(block, ports, _greedy_parts),
    "complement-balanced": lambda block, ports: _split_complement(block, ports, _balanced_parts),
}


def split_into_tiles(block: MatrixBlock, ports: int, policy: str = "full") -> list[TileExtent]:
    """Cut ``block`` into tiles of at most ports × ports that cover it exactly once.

    The default ``full`` policy cuts at multiples of ``ports`` (100 rows on 48 ports → 48 + 48 + 4), not
    into balanced parts (34 + 33 + 33): a full-height tile fills a module's output side exactly and wastes
    nothing, and the small remainder fits beside other tiles, whereas two balanced thirds never share a
    module (34 + 33 > 48). Other policies (``balanced``, ``strip``, ``complement`` and variants) exist
    because the best cut depends on what the tile will share a module with; ``place_blocks`` tries them
    and keeps the best.
    """
    _check_ports(ports)
    _check_block(block)
    if policy not in SPLIT_POLICIES:
        raise AdmcError(f"unknown tiling policy '{policy}' (expected one of {', '.join(SPLIT_POLICIES)})")
    return SPLIT_POLICIES[policy](block, ports)


# --------------------------------------------------------------------------------------------- packing


def pack_first_fit_decreasing(items: Sequence[tuple[int, int]], ports: int) -> list[int]:
    """Bin index per item. Items sorted by max(rows, cols), then rows + cols, both decreasing, then by
    index (a stable, deterministic order); each goes into the first open bin with room on both sides."""
    order = sorted(range(len(items)), key=lambda i: (-max(items[i]), -sum(items[i]), i))
    used_rows: list[int] = []
    used_columns: list[int] = []
    # Bins with a full side can take nothing more; scanning only the others keeps this near-linear when
    # most tiles are full ports × ports tiles.
    open_bins: list[int] = []
    assignment = [-1] * len(items)
    for index in order:
        rows, columns = items[index]
        for bin_index in open_bins:
            if used_rows[bin_index] + rows <= ports and used_columns[bin_index] + columns <= ports:
                break
        else:
            bin_index = len(used_rows)
            used_rows.append(0)
            used_columns.append(0)
            open_bins.append(bin_index)
        used_rows[bin_index] += rows
        used_columns[bin_index] += columns
        assignment[index] = bin_index
        if used_rows[bin_index] == ports or used_columns[bin_index] == ports:
            open_bins.remove(bin_index)
    return assignment


def pack_exact(items: Sequence[tuple[int, int]], ports: int, bins: int | None = None,
               minimum_bins: int = 0) -> tuple[list[int], bool]:
    """Minimum-bin assignment by an integer program; returns (bin per item, proven optimal).

    ``bins`` caps the number of bins (default: one per item); ``minimum_bins`` is a known lower bound.
    Symmetry breaking: item i may only use bins 0..i (relabel bins by their first item), and used bins
    form a prefix (bin_used[b] ≥ bin_used[b+1]).
    """
    import cvxpy as cp  # imported here: cvxpy is slow to import and only small instances need it
    import numpy as np

    count = len(items)
    if count == 0:
        return [], True
    bins = count if bins is None else min(bins, count)
    assign = cp.Variable((count, bins), boolean=True)
    used = cp.Variable(bins, boolean=True)
    rows = np.array([item[0] for item in items], dtype=float)
    columns = np.array([item[1] for item in items], dtype=float)
    allowed = np.tri(count, bins)  # allowed[i, b] = 1 exactly when b <= i
    constraints = [
        cp.sum(assign, axis=1) == 1,
        assign <= allowed,
        rows @ assign <= ports * used,
        columns @ assign <= ports * used,
        cp.sum(used) >= minimum_bins,
    ]
    if bins > 1:
        constraints.append(used[:-1] >= used[1:])
    problem = cp.Problem(cp.Minimize(cp.sum(used)), constraints)
    try:
        with warnings.catch_warnings():
            # cvxpy warns "solution may be inaccurate" when the node limit stops the search; the status
            # returned below already says so, and the caller keeps the incumbent only if it is no worse.
            warnings.simplefilter("ignore", UserWarning)
            with native_stdout_silenced():
                problem.solve(solver=cp.HIGHS, time_limit=EXACT_TIME_LIMIT_SECONDS,
                              mip_max_nodes=EXACT_NODE_LIMIT, threads=1, random_seed=0)
    except cp.error.SolverError as error:
        raise AdmcError(f"the packing integer program failed: {error}") from error
    if assign.value is None:
        raise AdmcError(f"the packing integer program found no assignment (status {problem.status})")
    assignment = [int(max(range(bins), key=lambda b, i=i: (assign.value[i, b], -b))) for i in range(count)]
    return _relabel(assignment), problem.status == cp.OPTIMAL


def _relabel(assignment: Sequence[int]) -> list[int]:
    """Number bins by their first item so equal packings compare equal."""
    labels: dict[int, int] = {}
    return [labels.setdefault(bin_index, len(labels)) for bin_index in assignment]


def pack_items(items: Sequence[tuple[int, int]], ports: int, bound: int = 0) -> tuple[list[int], str]:
    """Pack (rows, columns) items into as few bins as possible; returns (bin per item, solver name).

    First-fit-decreasing always runs; if it does not meet ``bound`` and there are at most
    ``EXACT_ITEM_LIMIT`` items, the integer program searches for fewer bins than FFD found.
    """
    for rows, columns in items:
        if not (0 < rows <= ports and 0 < columns <= ports):
            raise AdmcError(f"item of {rows} × {columns} does not fit a {ports} × {ports} module")
    greedy = _relabel(pack_first_fit_decreasing(items, ports))
    greedy_bins = max(greedy, default=-1) + 1
    if greedy_bins <= bound or len(items) > EXACT_ITEM_LIMIT:
        return greedy, "first-fit-decreasing"
    exact, optimal = pack_exact(items, ports, bins=greedy_bins, minimum_bins=bound)
    if max(exact) + 1 > greedy_bins:
        return greedy, "first-fit-decreasing"
    return exact, "milp-highs" if optimal else "milp-highs (node limit)"


# ------------------------------------------------------------------------------------------- placement


def _tiling_for(blocks: Sequence[MatrixBlock], ports: int, policies: Sequence[str]) -> list[TileExtent]:
    return [extent for block, policy in zip(blocks, policies, strict=True)
            for extent in split_into_tiles(block, ports, policy)]


def _greedy_bins(extents: Sequence[TileExtent], ports: int) -> int:
    return max(pack_first_fit_decreasing([(e.rows, e.columns) for e in extents], ports), default=-1) + 1


def choose_tiling(blocks: Sequence[MatrixBlock], ports: int) -> list[TileExtent]:
    """The tiling that first-fit-decreasing packs into the fewest modules: each uniform policy, then
    block-by-block changes of policy that strictly reduce the count (first policy wins ties)."""
    names = list(SPLIT_POLICIES)
    best_policies = min(([name] * len(blocks) for name in names),
                        key=lambda policies: _greedy_bins(_tiling_for(blocks, ports, policies), ports))
    best_bins = _greedy_bins(_tiling_for(blocks, ports, best_policies), ports)
    improved = True
    while improved:
        improved = False
        for position in range(len(blocks)):
            for name in names:
                trial = list(best_policies)
                trial[position] = name
                trial_bins = _greedy_bins(_tiling_for(blocks, ports, trial), ports)
                if trial_bins < best_bins:
                    best_policies, best_bins, improved = trial, trial_bins, True
    return _tiling_for(blocks, ports, best_policies)


def _place_group(blocks: Sequence[MatrixBlock], ports: int, first_module: int) -> tuple[list[Tile], int, str]:
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


def _place_layout(blocks: Sequence[MatrixBlock], ports: int, layout: str) -> tuple[list[Tile], int, str]:
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


def place_blocks(blocks: Sequence[MatrixBlock], ports: int, layout: str = "auto",
                 modules_available: int | None = None) -> Placement:
    """Tile the blocks and place the tiles on modules.

    ``packed``: all tiles share modules freely. ``ring``: each layer gets its own modules (the paper's
    Fig. 1a). ``auto``: whichever uses fewer modules, ``packed`` on a tie. Raises AdmcError when more than
    ``modules_available`` modules would be needed (None: unlimited).
    """
    _check_ports(ports)
    if layout not in LAYOUTS:
        raise AdmcError(f"unknown layout '{layout}' (expected one of {', '.join(LAYOUTS)})")
    names = [block.name for block in blocks]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise AdmcError(f"block names must be unique; repeated: {', '.join(duplicates)}")
    for block in blocks:
        _check_block(block)
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
    return Placement(tuple(tiles), modules, bound, chosen, solver, ports, tile_lower_bound(blocks, ports))


# ------------------------------------------------------------------------------------------ validation


def check_placement(placement: Placement, blocks: Sequence[MatrixBlock]) -> None:
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


def _check_ports(ports: int) -> None:
    if not isinstance(ports, int) or isinstance(ports, bool) or ports < 1:
        raise AdmcError(f"module ports must be a positive integer, got {ports!r}")


def _check_block(block: MatrixBlock) -> None:
    if block.rows < 1 or block.columns < 1:
        raise AdmcError(f"block '{block.name}' has {block.rows} × {block.columns} entries; both must be ≥ 1")


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


def place_blocks_avoiding(blocks: Sequence[MatrixBlock], ports: int, layout: str = "auto",
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
