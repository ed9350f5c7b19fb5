"""Tiling, packing, placement and routing: exact cover, port discipline, bounds, optimality, determinism."""

from __future__ import annotations

import ast
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from admc.core.errors import AdmcError
from admc.ir.program import MatrixBlock, StateGroup, block_indices, block_name
from admc.passes.routing import check_routing, routing_from_json, routing_graph, routing_to_json
from admc.passes.tile_cuts import SPLIT_POLICIES, BlockShape, split_into_tiles
from admc.passes.tile_packing import pack_exact, pack_first_fit_decreasing, pack_items
from admc.passes.tiling import (
    Placement,
    block_shapes,
    check_placement,
    lower_bound,
    place_blocks,
    tile_lower_bound,
)

PORTS = 48


def adm_chain(state: int, hidden: list[int]) -> tuple[list[BlockShape], list[StateGroup]]:
    widths = [state, *hidden]
    names = ["x"] + [f"h{i + 1}" for i in range(len(hidden))]
    groups, offset = [], 0
    for name, width in zip(names, widths, strict=True):
        groups.append(StateGroup(name, offset, width, "tanh"))
        offset += width
    blocks = [BlockShape(f"W{i + 1}", names[i + 1], names[i], hidden[i], widths[i], i + 1)
              for i in range(len(hidden))]
    blocks.append(BlockShape(f"W{len(hidden) + 1}", "x", names[-1], state, hidden[-1], len(hidden) + 1))
    return blocks, groups


def random_blocks(seed: int, count: int, largest: int, layers: int) -> list[BlockShape]:
    generator = random.Random(seed)
    return [BlockShape(f"B{i}", f"r{i}", f"c{i}", generator.randint(1, largest), generator.randint(1, largest),
                        generator.randint(1, layers)) for i in range(count)]


def assert_valid(placement: Placement, blocks: list[BlockShape]) -> None:
    """Independent re-check of what check_placement promises, with explicit coverage counters."""
    by_name = {block.name: block for block in blocks}
    coverage = {block.name: np.zeros((block.rows, block.columns), dtype=int) for block in blocks}
    outputs: dict[int, np.ndarray] = {}
    inputs: dict[int, np.ndarray] = {}
    for tile in placement.tiles:
        assert 1 <= tile.rows <= PORTS and 1 <= tile.columns <= PORTS
        assert 0 <= tile.output_port_start and tile.output_port_stop <= placement.ports
        assert 0 <= tile.input_port_start and tile.input_port_stop <= placement.ports
        assert 0 <= tile.module < placement.modules_used
        coverage[tile.block][tile.row_start:tile.row_stop, tile.column_start:tile.column_stop] += 1
        outputs.setdefault(tile.module, np.zeros(placement.ports, dtype=int))[
            tile.output_port_start:tile.output_port_stop] += 1
        inputs.setdefault(tile.module, np.zeros(placement.ports, dtype=int))[
            tile.input_port_start:tile.input_port_stop] += 1
    for name, counter in coverage.items():
        assert (counter == 1).all(), f"block {name} not covered exactly once"
    for module in outputs:
        assert outputs[module].max() <= 1 and inputs[module].max() <= 1, f"module {module} port reused"
    assert sorted(outputs) == list(range(placement.modules_used)), "every counted module holds a tile"
    assert placement.modules_used >= placement.lower_bound == lower_bound(blocks, PORTS)
    assert placement.modules_used >= placement.tile_lower_bound >= placement.lower_bound
    if placement.layout == "ring":
        for module in outputs:
            layers = {by_name[t.block].layer for t in placement.tiles if t.module == module}
            assert len(layers) == 1, f"ring module {module} mixes layers {layers}"
    check_placement(placement, blocks)


# ------------------------------------------------------------------------------------------ splitting


@pytest.mark.parametrize("policy", sorted(SPLIT_POLICIES))
@pytest.mark.parametrize("shape", [(1, 1), (48, 48), (49, 48), (100, 100), (256, 16), (16, 256), (97, 300)])
def test_every_policy_covers_the_block_exactly_once(policy: str, shape: tuple[int, int]) -> None:
    block = BlockShape("B", "r", "c", *shape, 1)
    counter = np.zeros(shape, dtype=int)
    for extent in split_into_tiles(block, PORTS, policy):
        assert 1 <= extent.rows <= PORTS and 1 <= extent.columns <= PORTS
        counter[extent.row_start:extent.row_stop, extent.column_start:extent.column_stop] += 1
    assert (counter == 1).all()


def test_default_split_cuts_at_multiples_of_the_module() -> None:
    extents = split_into_tiles(BlockShape("B", "r", "c", 100, 10, 1), PORTS)
    assert [extent.rows for extent in extents] == [48, 48, 4]
    balanced = split_into_tiles(BlockShape("B", "r", "c", 100, 10, 1), PORTS, "balanced")
    assert [extent.rows for extent in balanced] == [34, 33, 33]


def test_complement_tiles_of_an_adm_chain_pair_up() -> None:
    blocks, _ = adm_chain(16, [256])
    placement = place_blocks(blocks, PORTS, "packed")
    assert_valid(placement, blocks)
    # 256 × 16 cut into 32-row tiles and 16 × 256 into 32-column tiles: each pair fills a module.
    assert placement.modules_used == 8 == placement.tile_lower_bound


# ------------------------------------------------------------------------------------------- bounds


def test_lower_bounds() -> None:
    blocks = [BlockShape("A", "r", "c", 100, 10, 1), BlockShape("B", "c", "r", 10, 100, 2)]
    assert lower_bound(blocks, PORTS) == 3  # ⌈110 / 48⌉
    dense = [BlockShape("D", "r", "c", 100, 100, 1)]
    assert lower_bound(dense, PORTS) == 3
    assert tile_lower_bound(dense, PORTS) == 7  # each row needs ⌈100/48⌉ = 3 output ports: ⌈300/48⌉
    assert lower_bound([], PORTS) == 0 == tile_lower_bound([], PORTS)


# ------------------------------------------------------------------------------------------- packing


def brute_force_bins(items: list[tuple[int, int]], ports: int) -> int:
    best = len(items)
    for assignment in itertools.product(range(len(items)), repeat=len(items)):
        if assignment[0] != 0 or max(assignment) + 1 >= best:
            continue
        rows = [0] * len(items)
        columns = [0] * len(items)
        for (r, c), bin_index in zip(items, assignment, strict=True):
            rows[bin_index] += r
            columns[bin_index] += c
        if max(rows) <= ports and max(columns) <= ports:
            best = max(assignment) + 1
    return best


def assert_assignment_fits(items: list[tuple[int, int]], assignment: list[int], ports: int) -> None:
    assert len(assignment) == len(items) and min(assignment) >= 0
    for bin_index in set(assignment):
        members = [items[i] for i in range(len(items)) if assignment[i] == bin_index]
        assert sum(r for r, _ in members) <= ports and sum(c for _, c in members) <= ports


@pytest.mark.parametrize("seed", range(12))
def test_exact_packing_is_optimal_against_brute_force(seed: int) -> None:
    generator = random.Random(seed)
    ports = 10
    items = [(generator.randint(1, ports), generator.randint(1, ports)) for _ in range(generator.randint(1, 6))]
    assignment, optimal = pack_exact(items, ports)
    assert optimal
    assert_assignment_fits(items, assignment, ports)
    assert max(assignment) + 1 == brute_force_bins(items, ports)


def test_exact_beats_first_fit_decreasing_where_greedy_is_suboptimal() -> None:
    # Found by random search: FFD needs 4 bins, 3 suffice ((10,9); (6,6)+(4,1); (4,8)+(3,1)+(3,1)).
    items = [(3, 1), (4, 1), (4, 8), (3, 1), (10, 9), (6, 6)]
    assert max(pack_first_fit_decreasing(items, 10)) + 1 == 4
    exact, optimal = pack_exact(items, 10)
    assert optimal and max(exact) + 1 == 3 == brute_force_bins(items, 10)
    assert_assignment_fits(items, exact, 10)


@pytest.mark.parametrize("seed", range(8))
def test_first_fit_decreasing_is_valid(seed: int) -> None:
    generator = random.Random(seed)
    items = [(generator.randint(1, 48), generator.randint(1, 48)) for _ in range(200)]
    assignment = pack_first_fit_decreasing(items, 48)
    assert_assignment_fits(items, assignment, 48)
    assert sorted(set(assignment)) == list(range(max(assignment) + 1))


def test_pack_items_reports_its_solver() -> None:
    small = [(30, 20), (20, 30), (18, 28), (28, 18)]
    _, solver = pack_items(small, 48, bound=2)
    assert solver == "first-fit-decreasing"  # FFD met the bound, nothing to prove
    large = [(47, 1)] * 50
    _, solver = pack_items(large, 48)
    assert solver == "first-fit-decreasing"  # above the exact item limit


def test_pack_items_uses_the_integer_program_when_greedy_misses_the_bound() -> None:
    items = [(3, 1), (4, 1), (4, 8), (3, 1), (10, 9), (6, 6)]
    assignment, solver = pack_items(items, 10, bound=1)
    assert solver == "milp-highs"
    assert max(assignment) + 1 == 3


# ----------------------------------------------------------------------------------------- placement


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 5), largest=st.sampled_from([20, 60, 130]),
       layers=st.integers(1, 3), layout=st.sampled_from(["packed", "ring", "auto"]))
def test_random_placements_are_valid(seed: int, count: int, largest: int, layers: int, layout: str) -> None:
    blocks = random_blocks(seed, count, largest, layers)
    placement = place_blocks(blocks, PORTS, layout)
    assert_valid(placement, blocks)
    if layout == "auto":
        packed = place_blocks(blocks, PORTS, "packed").modules_used
        ring = place_blocks(blocks, PORTS, "ring").modules_used
        assert placement.modules_used == min(packed, ring)
        assert placement.layout == ("packed" if packed <= ring else "ring")


@pytest.mark.parametrize("state,hidden", [(2, [16, 16]), (8, [100, 60]), (16, [256, 256]), (4, [48, 48, 48])])
@pytest.mark.parametrize("layout", ["packed", "ring", "auto"])
def test_adm_chain_placements_are_valid(state: int, hidden: list[int], layout: str) -> None:
    blocks, groups = adm_chain(state, hidden)
    placement = place_blocks(blocks, PORTS, layout)
    assert_valid(placement, blocks)
    check_routing(routing_graph(placement, blocks, groups), placement, blocks, groups)


def test_ring_gives_each_layer_its_own_modules() -> None:
    blocks, _ = adm_chain(2, [16, 16])
    packed = place_blocks(blocks, PORTS, "packed")
    ring = place_blocks(blocks, PORTS, "ring")
    assert packed.modules_used == 1  # 16+16+2 rows and 2+16+16 columns fit one module
    assert ring.modules_used == 3
    assert place_blocks(blocks, PORTS, "auto").layout == "packed"
    assert_valid(ring, blocks)


def test_too_few_modules_is_an_error_naming_the_numbers() -> None:
    blocks, _ = adm_chain(8, [100, 60])
    needed = place_blocks(blocks, PORTS, "packed").modules_used
    assert place_blocks(blocks, PORTS, "packed", modules_available=needed).modules_used == needed
    with pytest.raises(AdmcError, match=rf"needs {needed} modules but only {needed - 1} are available "
                                        rf"\(lower bound {lower_bound(blocks, PORTS)}\)"):
        place_blocks(blocks, PORTS, "packed", modules_available=needed - 1)


@pytest.mark.parametrize("call,message", [
    (lambda: place_blocks([], 0), "ports"),
    (lambda: place_blocks([], PORTS, "spiral"), "layout 'spiral'"),
    (lambda: place_blocks([BlockShape("A", "r", "c", 1, 1, 1)] * 2, PORTS), "repeated: A"),
    (lambda: place_blocks([BlockShape("A", "r", "c", 0, 3, 1)], PORTS), "block 'A'"),
    (lambda: split_into_tiles(BlockShape("A", "r", "c", 3, 3, 1), PORTS, "diagonal"), "policy 'diagonal'"),
])
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(AdmcError, match=message):
        call()


def test_placement_is_deterministic_and_round_trips() -> None:
    blocks = random_blocks(7, 5, 130, 3)
    first = place_blocks(blocks, PORTS, "auto")
    second = place_blocks(blocks, PORTS, "auto")
    assert first == second
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    assert Placement.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_program_blocks_are_placed_by_index_and_found_by_name() -> None:
    rng = np.random.default_rng(3)
    program_blocks = [MatrixBlock("h1", "x", rng.standard_normal((60, 8)), layer=1),
                      MatrixBlock("h2", "h1", rng.standard_normal((50, 60)), layer=2),
                      MatrixBlock("x", "h2", rng.standard_normal((8, 50)), layer=3)]
    shapes = block_shapes(program_blocks)
    assert [shape.name for shape in shapes] == [block_name(index) for index in range(3)] == \
        ["block_0000", "block_0001", "block_0002"]
    assert [(shape.rows, shape.columns, shape.layer) for shape in shapes] == [(60, 8, 1), (50, 60, 2), (8, 50, 3)]
    placement = place_blocks(list(reversed(shapes)), PORTS, "packed")  # the given order is what counts
    for tile in placement.tiles:
        index = placement.block_index(tile)
        assert shapes[2 - index].name == tile.block
    assert block_indices(3) == {"block_0000": 0, "block_0001": 1, "block_0002": 2}
    stranger = type(placement.tiles[0])(**{**placement.tiles[0].__dict__, "block": "block_0009"})
    with pytest.raises(AdmcError, match="'block_0009', which is not among the placed blocks"):
        placement.block_index(stranger)


def test_state_groups_and_matrix_blocks_are_defined_once() -> None:
    """Placement reads the program's own state groups; it has a shape of its own for blocks, not a second
    ``MatrixBlock``."""
    repository = Path(__file__).resolve().parent.parent
    definitions = {name: [] for name in ("StateGroup", "MatrixBlock")}
    for folder in ("admc", "ir", "passes", "targets"):
        for path in (repository / folder).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and node.name in definitions:
                    definitions[node.name].append(path.relative_to(repository).as_posix())
    assert definitions == {"StateGroup": ["ir/program.py"], "MatrixBlock": ["ir/program.py"]}


def test_check_placement_catches_overlapping_ports() -> None:
    blocks, _ = adm_chain(2, [16, 16])
    placement = place_blocks(blocks, PORTS, "packed")
    tiles = list(placement.tiles)
    tiles[1] = type(tiles[1])(**{**tiles[1].__dict__, "input_port_start": tiles[0].input_port_start})
    broken = Placement(tuple(tiles), placement.modules_used, placement.lower_bound, placement.layout,
                       placement.solver, placement.ports, placement.tile_lower_bound)
    with pytest.raises(AdmcError, match="share input ports"):
        check_placement(broken, blocks)


# ------------------------------------------------------------------------------------------- routing


def routed(state: int = 8, hidden: list[int] | None = None):
    blocks, groups = adm_chain(state, hidden or [100, 60])
    placement = place_blocks(blocks, PORTS, "packed")
    return routing_graph(placement, blocks, groups), placement, blocks, groups


def test_routing_graph_shape() -> None:
    graph, placement, blocks, groups = routed()
    check_routing(graph, placement, blocks, groups)
    kinds = [node[0] for node in graph.nodes]
    assert kinds.count("channel") == 8 + 100 + 60
    assert kinds.count("sum") == 8 + 100 + 60  # every channel is a destination in a cyclic chain
    assert kinds.count("input_port") == sum(t.columns for t in placement.tiles)
    assert kinds.count("output_port") == sum(t.rows for t in placement.tiles)
    # The output ports feeding channel 0 of x carry its partial sums over all 60 columns of h2.
    feeding = list(graph.predecessors(("sum", "x", 0)))
    columns = sum(placement.tiles[graph.nodes[port]["tiles"][0]].columns for port in feeding)
    assert columns == 60


def test_routing_json_round_trip_is_exact() -> None:
    graph, placement, blocks, groups = routed()
    text = json.dumps(routing_to_json(graph))
    restored = routing_from_json(json.loads(text))
    check_routing(restored, placement, blocks, groups)
    assert json.dumps(routing_to_json(restored)) == text
    assert text == json.dumps(routing_to_json(routed()[0]))  # deterministic across builds


def test_check_routing_catches_a_missing_sum_node() -> None:
    graph, placement, blocks, groups = routed()
    graph.remove_node(("sum", "h1", 5))
    with pytest.raises(AdmcError, match="channel 5 of group 'h1' has 0 sum nodes"):
        check_routing(graph, placement, blocks, groups)


def test_check_routing_catches_a_port_driven_twice() -> None:
    graph, placement, blocks, groups = routed()
    tile = placement.tiles[0]
    graph.add_edge(("channel", "h2", 59), ("input_port", tile.module, tile.input_port_start))
    with pytest.raises(AdmcError, match="driven by 2 node"):
        check_routing(graph, placement, blocks, groups)


def test_check_routing_catches_an_output_feeding_two_sums() -> None:
    graph, placement, blocks, groups = routed()
    tile = placement.tiles[0]
    graph.add_edge(("output_port", tile.module, tile.output_port_start), ("sum", "x", 0))
    with pytest.raises(AdmcError, match="feeding 2 node"):
        check_routing(graph, placement, blocks, groups)


def test_check_routing_catches_a_stray_port() -> None:
    graph, placement, blocks, groups = routed()
    graph.add_node(("input_port", placement.modules_used + 3, 0), tiles=[0])
    with pytest.raises(AdmcError, match="belongs to no tile"):
        check_routing(graph, placement, blocks, groups)


def test_routing_refuses_blocks_that_do_not_match_their_groups() -> None:
    blocks, groups = adm_chain(8, [100, 60])
    placement = place_blocks(blocks, PORTS, "packed")
    wrong = [StateGroup("x", 0, 8, "tanh"), StateGroup("h1", 8, 99, "tanh"), StateGroup("h2", 107, 60, "tanh")]
    with pytest.raises(AdmcError, match="block 'W1' has 100 rows but its row group 'h1' has 99"):
        routing_graph(placement, blocks, wrong)


def test_exact_packing_prints_nothing_on_standard_output(capfd) -> None:
    """HiGHS prints a banner to descriptor 1 on construction; admc's standard output carries results."""
    print("before", flush=True)
    assignment, _ = pack_exact([(30, 20), (20, 30), (18, 18)], 48)
    print("after", flush=True)
    captured = capfd.readouterr()
    assert captured.out == "before\nafter\n"
    assert len(assignment) == 3


def _plain_first_fit_decreasing(items: list[tuple[int, int]], ports: int) -> list[int]:
    """First-fit-decreasing as its docstring states it, with no shortcut for full tiles."""
    used: list[list[int]] = []
    assignment = [-1] * len(items)
    for index in sorted(range(len(items)), key=lambda i: (-max(items[i]), -sum(items[i]), i)):
        rows, columns = items[index]
        bin_index = next((position for position, (used_rows, used_columns) in enumerate(used)
                          if used_rows + rows <= ports and used_columns + columns <= ports), len(used))
        if bin_index == len(used):
            used.append([0, 0])
        used[bin_index][0] += rows
        used[bin_index][1] += columns
        assignment[index] = bin_index
    return assignment


@pytest.mark.parametrize("seed", range(8))
def test_first_fit_decreasing_places_full_tiles_as_the_plain_algorithm_does(seed: int) -> None:
    generator = random.Random(seed)
    items = [(PORTS, PORTS) if generator.random() < 0.4 else (generator.randint(1, PORTS), generator.randint(1, PORTS))
             for _ in range(generator.randint(1, 120))]
    assert pack_first_fit_decreasing(items, PORTS) == _plain_first_fit_decreasing(items, PORTS)


@pytest.mark.parametrize("seed", range(8))
def test_full_tiles_take_one_bin_each_and_leave_the_rest_packed_alone(seed: int) -> None:
    # choose_tiling counts bins as (full tiles) + (bins of the other tiles packed alone): the identity checked
    # here on random mixes of full and partial tiles against packing them all together.
    from admc.passes.tile_packing import pack_first_fit_decreasing

    rng = np.random.default_rng(seed)
    ports = 8
    items = [(ports, ports) if rng.random() < 0.4 else tuple(int(side) for side in rng.integers(1, ports + 1, 2))
             for _ in range(int(rng.integers(5, 60)))]
    together = max(pack_first_fit_decreasing(items, ports), default=-1) + 1
    rest = [item for item in items if item != (ports, ports)]
    alone = sum(item == (ports, ports) for item in items) + max(pack_first_fit_decreasing(rest, ports), default=-1) + 1
    assert together == alone


@pytest.mark.parametrize("seed", range(12))
def test_runs_of_equal_tiles_are_placed_as_the_plain_algorithm_places_them_one_by_one(seed: int) -> None:
    # A large network's partial tiles are long runs of a few shapes (edge strips), which the packer places a run
    # at a time: a bin takes as many of the run as fit. Few shapes on small modules make many such runs, and
    # bins that a run fills on one side or leaves with room for the next shape.
    generator = random.Random(seed)
    ports = generator.choice((4, 6, 9, 48))
    shapes = [(generator.randint(1, ports), generator.randint(1, ports)) for _ in range(generator.randint(1, 4))]
    items = [shape for shape in shapes for _ in range(generator.randint(0, 90))]
    if seed % 2:
        generator.shuffle(items)
    assert pack_first_fit_decreasing(items, ports) == _plain_first_fit_decreasing(items, ports)
