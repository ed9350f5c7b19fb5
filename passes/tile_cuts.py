"""Cutting one block of the loop matrix into tiles that fit a module of ``ports`` × ``ports``.

Requires: a ``BlockShape`` with positive row and column counts; a positive integer ``ports``.
Guarantees: ``split_into_tiles`` returns ``TileExtent`` rectangles of at most ports × ports that cover every
entry of the block exactly once, in a fixed order; each policy of ``SPLIT_POLICIES`` cuts differently (which
cut packs best depends on what the tiles share a module with). ``check_ports`` and ``check_block`` raise
``AdmcError`` on a module size or block shape no tile can have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from admc.core.errors import AdmcError


@dataclass(frozen=True)
class BlockShape:
    """What placement needs of one non-zero block of the loop matrix (``ir.program.MatrixBlock``): its name,
    the groups it connects (row_group channels ← W · σ(column_group channels)), its size and its layer."""

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


def check_ports(ports: int) -> None:
    """Refuse a module size that is not a positive integer."""
    if not isinstance(ports, int) or isinstance(ports, bool) or ports < 1:
        raise AdmcError(f"module ports must be a positive integer, got {ports!r}")


def check_block(block: BlockShape) -> None:
    """Refuse a block without entries."""
    if block.rows < 1 or block.columns < 1:
        raise AdmcError(f"block '{block.name}' has {block.rows} × {block.columns} entries; both must be ≥ 1")


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


def _grid(block: BlockShape, row_parts: Sequence[int], column_parts: Sequence[int],
          row_start: int = 0, column_start: int = 0) -> list[TileExtent]:
    return [TileExtent(block.name, r0, r1, c0, c1)
            for r0, r1 in _ranges(row_parts, row_start) for c0, c1 in _ranges(column_parts, column_start)]


def _split_strip(block: BlockShape, ports: int, parts: Callable[[int, int], list[int]]) -> list[TileExtent]:
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


def _split_complement(block: BlockShape, ports: int,
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


SPLIT_POLICIES: dict[str, Callable[[BlockShape, int], list[TileExtent]]] = {
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


def split_into_tiles(block: BlockShape, ports: int, policy: str = "full") -> list[TileExtent]:
    """Cut ``block`` into tiles of at most ports × ports that cover it exactly once.

    The default ``full`` policy cuts at multiples of ``ports`` (100 rows on 48 ports → 48 + 48 + 4), not
    into balanced parts (34 + 33 + 33): a full-height tile fills a module's output side exactly and wastes
    nothing, and the small remainder fits beside other tiles, whereas two balanced thirds never share a
    module (34 + 33 > 48). Other policies (``balanced``, ``strip``, ``complement`` and variants) exist
    because the best cut depends on what the tile will share a module with; ``place_blocks`` tries them
    and keeps the best.
    """
    check_ports(ports)
    check_block(block)
    if policy not in SPLIT_POLICIES:
        raise AdmcError(f"unknown tiling policy '{policy}' (expected one of {', '.join(SPLIT_POLICIES)})")
    return SPLIT_POLICIES[policy](block, ports)
