"""Placement benchmark: modules used by the packed, ring and auto layouts on a suite of ADM chains.

Requires: admc installed (``pip install -e .``). Run ``python benchmarks/placement_benchmark.py`` for a table,
``--json PATH`` to also write the figures. Guarantees: the same figures on every run (placement is
deterministic); only the times vary.

Each network is an ADM cyclic chain with state size d and hidden widths h_1 … h_{K-1}: layer 1 is
h_1 × d (reads the state group), layer i is h_i × h_{i-1}, and the closing layer d × h_last writes the state.
Two bounds are reported: the design's ⌈max(Σrows, Σcols)/ports⌉ and the tiling-aware bound (a block row
with c columns needs ⌈c/ports⌉ output ports), which is the one a dense network can approach.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import place_blocks

SUITE: list[tuple[int, list[int]]] = [
    (2, [16, 16]),
    (2, [32, 32, 32]),
    (4, [48, 48, 48, 48]),
    (8, [100, 60]),
    (2, [64, 64]),
    (16, [256, 256, 256]),
    (32, [200, 200]),
    (128, [512, 512]),
    (64, [1024, 1024, 1024, 1024]),
    (3, [40, 40, 40]),
]


def adm_chain_blocks(state: int, hidden: list[int]) -> list[BlockShape]:
    """The non-zero blocks of the cyclic ADM matrix (docs/design.md §1, Eq. 6)."""
    widths = [state, *hidden]
    names = ["x"] + [f"h{i + 1}" for i in range(len(hidden))]
    blocks = [BlockShape(f"W{i + 1}", names[i + 1], names[i], hidden[i], widths[i], i + 1)
              for i in range(len(hidden))]
    blocks.append(BlockShape(f"W{len(hidden) + 1}", "x", names[-1], state, hidden[-1], len(hidden) + 1))
    return blocks


def run(ports: int) -> dict:
    rows = []
    for state, hidden in SUITE:
        blocks = adm_chain_blocks(state, hidden)
        started = time.perf_counter()
        placements = {layout: place_blocks(blocks, ports, layout) for layout in ("packed", "ring", "auto")}
        seconds = time.perf_counter() - started
        auto = placements["auto"]
        rows.append({
            "d": state, "hidden": hidden, "tiles": len(auto.tiles),
            "lower_bound": auto.lower_bound, "tile_lower_bound": auto.tile_lower_bound,
            "packed": placements["packed"].modules_used, "ring": placements["ring"].modules_used,
            "auto": auto.modules_used, "auto_layout": auto.layout, "solver": auto.solver,
            "auto_over_lower_bound": auto.modules_used / auto.lower_bound,
            "auto_over_tile_lower_bound": auto.modules_used / auto.tile_lower_bound,
            "seconds_all_three_layouts": seconds,
        })
    count = len(rows)
    return {
        "ports": ports,
        "networks": rows,
        "mean_auto_over_lower_bound": sum(r["auto_over_lower_bound"] for r in rows) / count,
        "mean_auto_over_tile_lower_bound": sum(r["auto_over_tile_lower_bound"] for r in rows) / count,
    }


def print_table(result: dict) -> None:
    header = (f"{'network (d; hidden)':<28}{'tiles':>6}{'LB':>6}{'tileLB':>7}{'packed':>8}{'ring':>6}"
              f"{'auto':>6}  {'layout':<7}{'auto/LB':>8}{'auto/tLB':>9}{'time s':>8}  solver")
    print(f"ports = {result['ports']}")
    print(header)
    print("-" * len(header))
    for row in result["networks"]:
        hidden = row["hidden"]
        shown = f"[{hidden[0]}]*{len(hidden)}" if len(set(hidden)) == 1 and len(hidden) > 2 else str(hidden)
        network = f"{row['d']}; {shown}"
        print(f"{network:<28}{row['tiles']:>6}{row['lower_bound']:>6}{row['tile_lower_bound']:>7}"
              f"{row['packed']:>8}{row['ring']:>6}{row['auto']:>6}  {row['auto_layout']:<7}"
              f"{row['auto_over_lower_bound']:>8.3f}{row['auto_over_tile_lower_bound']:>9.3f}"
              f"{row['seconds_all_three_layouts']:>8.3f}  {row['solver']}")
    print(f"mean auto / lower bound      = {result['mean_auto_over_lower_bound']:.3f}")
    print(f"mean auto / tile lower bound = {result['mean_auto_over_tile_lower_bound']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=48, help="ports per module (default 48)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    arguments = parser.parse_args()
    result = run(arguments.ports)
    print_table(result)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
