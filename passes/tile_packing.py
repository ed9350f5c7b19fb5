"""2-D vector bin packing of tiles onto modules: a tile of r rows and c columns uses r output ports and c input
ports of one module of ``ports`` × ``ports``.

Requires: items (rows, columns) with 0 < rows, columns ≤ ports.
Guarantees: every item gets one bin, and no bin holds more than ``ports`` rows or ``ports`` columns in total;
bins are numbered by their first item, so equal packings compare equal; the same items always give the same
assignment. First-fit-decreasing always runs; small instances are then solved exactly as an integer program
(cvxpy + HiGHS, with a deterministic node limit), kept only when it needs fewer bins. ``pack_items`` names the
solver that produced its answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from admc.core.errors import AdmcError
from admc.core.native_output import native_stdout_silenced

# Beyond this many tiles in one packing problem the integer program is replaced by first-fit-decreasing:
# x[item, bin] has items × bins binaries, and HiGHS stays well below a second up to about this size.
EXACT_ITEM_LIMIT = 40
# A node limit (not only a time limit) keeps the exact solver deterministic: the same input explores the
# same branch-and-bound tree whatever the machine's speed. The time limit is only a safety net.
EXACT_NODE_LIMIT = 2000
EXACT_TIME_LIMIT_SECONDS = 30.0


def pack_first_fit_decreasing(items: Sequence[tuple[int, int]], ports: int) -> list[int]:
    """Bin index per item. Items sorted by max(rows, cols), then rows + cols, both decreasing, then by
    index (a stable, deterministic order); each goes into the first open bin with room on both sides."""
    # Full ports × ports tiles sort first (largest side and sum, then index) and each fills a bin of its own:
    # they take bins 0, 1, … in index order without a search (most tiles of a large network are full).
    full = [index for index, item in enumerate(items) if item[0] == ports and item[1] == ports]
    assignment = [-1] * len(items)
    for bin_index, index in enumerate(full):
        assignment[index] = bin_index
    rest = [index for index, item in enumerate(items) if not (item[0] == ports and item[1] == ports)]
    order = sorted(rest, key=lambda i: (-max(items[i]), -sum(items[i]), i))
    used_rows: list[int] = [ports] * len(full)
    used_columns: list[int] = [ports] * len(full)
    # Bins with a full side can take nothing more; scanning only the others keeps this near-linear.
    open_bins: list[int] = []
    # A run of equal items in that order is placed at once: a bin with no room for one of them has none for the
    # next (bins only fill), so item by item each goes where the previous one went or later, and a bin takes as
    # many as fit — the same assignment, without a scan of the open bins per item (a large network's partial
    # tiles come in runs of ~85 equal edge strips).
    position = 0
    while position < len(order):
        rows, columns = items[order[position]]
        end = position + 1
        while end < len(order) and items[order[end]] == (rows, columns):
            end += 1

        existing = iter(list(open_bins))
        while position < end:
            bin_index = next((candidate for candidate in existing
                              if _room(candidate, rows, columns, used_rows, used_columns, ports) > 0), None)
            if bin_index is None:
                bin_index = len(used_rows)
                used_rows.append(0)
                used_columns.append(0)
                open_bins.append(bin_index)
            take = min(end - position, _room(bin_index, rows, columns, used_rows, used_columns, ports))
            for index in order[position:position + take]:
                assignment[index] = bin_index
            position += take
            used_rows[bin_index] += rows * take
            used_columns[bin_index] += columns * take
            if used_rows[bin_index] == ports or used_columns[bin_index] == ports:
                open_bins.remove(bin_index)
    return assignment


def _room(bin_index: int, rows: int, columns: int, used_rows: list[int], used_columns: list[int], ports: int) -> int:
    """How many more rows × columns items the bin holds."""
    return min((ports - used_rows[bin_index]) // rows, (ports - used_columns[bin_index]) // columns)


def pack_exact(items: Sequence[tuple[int, int]], ports: int, bins: int | None = None,
               minimum_bins: int = 0) -> tuple[list[int], bool]:
    """Minimum-bin assignment by an integer program; returns (bin per item, proven optimal).

    ``bins`` caps the number of bins (default: one per item); ``minimum_bins`` is a known lower bound.
    Symmetry breaking: item i may only use bins 0..i (relabel bins by their first item), and used bins
    form a prefix (bin_used[b] ≥ bin_used[b+1]).
    """
    import cvxpy as cp  # imported here: cvxpy is slow to import and only small instances need it

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
