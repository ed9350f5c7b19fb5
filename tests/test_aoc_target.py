"""Acceptance points of the AOC target: weights realised by the emitted images, tiling and routing, determinism,
end-to-end verification on small and ≥ 20-module networks, float-weight and 10-bit targets, inspect, refusals
and state scaling.

Every check reconstructs what it needs from the bundle's raw payloads (PNG grey levels read back from the
files, the response curve written out below, β, α and the tile table) and compares it with targets computed
independently from the canonical network, never with the arrays the backend itself computed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from models import AdmForm, StandardMlp, example_inputs, export_onnx, seeded
from torch import nn

from admc.bundle.program import bundle_program
from admc.bundle.program_io import layout_groups
from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build, load_source, pack_for_target
from admc.ir.program import StateGroup, block_name
from admc.passes.canonicalize import canonicalize
from admc.passes.routing import check_routing, routing_from_json
from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import Placement, Tile
from admc.runtime.executor import IdealExecutor
from admc.targets.aoc.bundle_reader import tile_block_index
from admc.targets.aoc.png import read_png
from admc.targets.loader import load_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

SOLVERS = ("explicit-euler", "heun", "implicit-euler", "crank-nicolson")
PORTS = 48
# The aoc-48 preset's response curves T(u) = a u² + b u + c (written out here, checked against the manifest).
RESPONSE = {"positive": (-0.1426, 0.8706, 0.04500), "negative": (-0.1440, 0.8355, 0.05280)}
VOLTAGE_LIMIT = min(3.290, 2.845)  # aoc-48 state.voltage_min / voltage_max
INJECTION_CLIP = 1.3  # aoc-48 state.injection_clip
BETA_MAX = load_target("aoc-48").gain.beta_max  # the chain gain × the largest gain setting


# ---------------------------------------------------------------- models and builds shared by the tests


def _export(module: nn.Module, path: Path, d: int = 2) -> Path:
    return export_onnx(module, path, inputs=example_inputs(d))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("aoc-models")
    return {
        # d = 2, hidden 16: fits one module.
        "small": _export(seeded(AdmForm((16,)), 0), directory / "small.onnx"),
        # Several modules and split blocks (64 rows > 48 ports), small enough for the exact packer.
        "multi": _export(seeded(AdmForm((64, 40)), 1), directory / "multi.onnx"),
        # Read x linearly: the fold-input layout on aoc-48 (no linear channels), feedback blocks.
        "standard": _export(seeded(StandardMlp((20, 12)), 2), directory / "standard.onnx"),
    }


@pytest.fixture(scope="module")
def bundles(models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("aoc-bundles")
    return {name: build(path, directory / name, target="aoc-48", solver="crank-nicolson", steps=4)
            for name, path in models.items()}


def _target_file(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"inherits: aoc-48\nname: {name}\n{body}")
    return path


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


# ---------------------------------------------------------------- independent reconstruction helpers


def _level_weights(response: tuple[float, float, float], bits: int) -> np.ndarray:
    """w(u) = (T(u) − c) / (a + b) = (a u² + b u) / (a + b) at u = k / (2^bits − 1), k = 0 … 2^bits − 1."""
    a, b, _ = response
    u = np.arange(2 ** bits, dtype=np.float64) / (2 ** bits - 1)
    return (a * u * u + b * u) / (a + b)


def _half_step(levels: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Half the larger grey-level step adjacent to each level (the nearest-level rounding error bound)."""
    grey = grey.astype(np.int64)
    up = levels[np.minimum(grey + 1, len(levels) - 1)] - levels[grey]
    down = levels[grey] - levels[np.maximum(grey - 1, 0)]
    return 0.5 * np.maximum(up, down)


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, bit_depth = struct.unpack(">IIB", data[16:25])
    assert (width, height) == (PORTS, PORTS)
    return bit_depth


def _images(bundle: Path, modules: int) -> dict[str, np.ndarray]:
    """[modules, input port, output port] grey levels per path, read from the PNG files themselves."""
    return {path: np.stack([read_png(bundle / "aoc" / "images" / f"module_{module:04d}_{path}.png")
                            for module in range(modules)]) for path in ("positive", "negative")}


def _target_blocks(model: Path, manifest: dict) -> list[np.ndarray]:
    """The scaled weights, from the canonical network and the pack pass times each row group's voltage scale."""
    network = canonicalize(load_source(model).graph)
    program = pack_for_target(network, linear_channels=bool(manifest["target"]["linear_channels"]))
    scale = {group["name"]: group["voltage_scale"] for group in manifest["layout"]["groups"]}
    entries = manifest["layout"]["blocks"]
    assert len(entries) == len(program.blocks)
    blocks = []
    for entry, block in zip(entries, program.blocks, strict=True):
        assert (entry["row_group"], entry["column_group"]) == (block.row_group, block.column_group)
        assert (entry["rows"], entry["columns"]) == block.matrix.shape
        blocks.append(scale[block.row_group] * block.matrix)
    return blocks


def _group_offsets(manifest: dict) -> dict[str, int]:
    return {group["name"]: group["offset"] for group in manifest["layout"]["groups"]}


def _reconstruct(bundle: Path, manifest: dict, bits: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Realised blocks from PNGs, β and α; the per-entry error bound; and the grey images themselves."""
    section = manifest["aoc"]
    modules = section["summary"]["modules_used"]
    grey = _images(bundle, modules)
    beta = np.load(bundle / "aoc" / "beta.npy")
    alpha = np.load(bundle / "channels" / "alpha.npy")
    levels = {path: _level_weights(RESPONSE[path], bits) for path in RESPONSE}
    weight = {path: levels[path][grey[path].astype(np.int64)] for path in RESPONSE}
    offsets = _group_offsets(manifest)
    entries = manifest["layout"]["blocks"]
    realised = [np.full((entry["rows"], entry["columns"]), np.nan) for entry in entries]
    bounds = [np.full((entry["rows"], entry["columns"]), np.nan) for entry in entries]
    # A compensated σ shape: the images carry column j × k_j (sigma_shape.py); the program's weight is / k_j.
    compensation = section.get("sigma_compensation")
    output_scale = None if compensation is None else np.load(bundle / compensation["output_scale"])
    for tile in section["tiles"]:
        index = tile_block_index(manifest["layout"], tile)
        rows, columns = tile["row_stop"] - tile["row_start"], tile["column_stop"] - tile["column_start"]
        module = tile["module"]
        outputs = slice(tile["output_port_start"], tile["output_port_start"] + rows)
        inputs = slice(tile["input_port_start"], tile["input_port_start"] + columns)
        channels = offsets[entries[index]["row_group"]] + np.arange(tile["row_start"], tile["row_stop"])
        gain = beta[module, outputs] / (1.0 - alpha[channels])  # one per tile row (output port)
        signed = (weight["positive"][module, inputs, outputs] - weight["negative"][module, inputs, outputs]).T
        half = (_half_step(levels["positive"], grey["positive"][module, inputs, outputs])
                + _half_step(levels["negative"], grey["negative"][module, inputs, outputs])).T
        window = (slice(tile["row_start"], tile["row_stop"]), slice(tile["column_start"], tile["column_stop"]))
        if output_scale is not None:
            column_scale = output_scale[offsets[entries[index]["column_group"]]
                                        + np.arange(tile["column_start"], tile["column_stop"])]
            signed, half = signed / column_scale[None, :], half / column_scale[None, :]
        realised[index][window] = gain[:, None] * signed
        bounds[index][window] = gain[:, None] * half
    return realised, bounds, grey


# ---------------------------------------------------------------- 1. weights realised by the images


@pytest.mark.parametrize("name", ["small", "multi", "standard"])
def test_images_gains_and_alpha_realise_the_scaled_weights(models, bundles, name):
    bundle, manifest = bundles[name], _manifest(bundles[name])
    slm = manifest["target"]["slm"]
    assert slm["bit_depth"] == 8 and not slm["float_weights"]
    for path, response in RESPONSE.items():
        np.testing.assert_allclose(slm[f"response_{path}"], response, rtol=0, atol=0)
    modules = manifest["aoc"]["summary"]["modules_used"]
    for module in range(modules):
        for path in RESPONSE:
            assert _png_bit_depth(bundle / "aoc" / "images" / f"module_{module:04d}_{path}.png") == 8
    targets = _target_blocks(models[name], manifest)
    realised, bounds, grey = _reconstruct(bundle, manifest, 8)
    alpha = np.load(bundle / "channels" / "alpha.npy")
    beta = np.load(bundle / "aoc" / "beta.npy")
    assert beta.shape == (modules, PORTS)
    assert np.all(beta <= BETA_MAX * (1 + 1e-12)) and np.all(beta >= 0)
    assert np.all(alpha >= 0) and np.all(alpha <= 0.95)
    for index, (target, got, bound) in enumerate(zip(targets, realised, bounds, strict=True)):
        assert not np.any(np.isnan(got)), f"block {index}: entries no tile covers"
        error = np.abs(got - target)
        worst = np.unravel_index(np.argmax(error - bound), error.shape)
        assert np.all(error <= bound * (1 + 1e-9) + 1e-15), (
            f"block {index} entry {worst}: |W_realised − W_target| = {error[worst]:.3e} > bound {bound[worst]:.3e}")
        # Not vacuous: the bound is a few hundredths of a percent of the block, so the images must carry the
        # weights, and a sign error or a wrong gain would blow it.
        assert np.max(bound) <= 0.01 * np.max(np.abs(target))
        assert np.max(error) > 0  # 8-bit quantisation is not exact
    # Sign split: no pixel is lit on both paths; pixels outside every tile are dark.
    assert not np.any((grey["positive"] > 0) & (grey["negative"] > 0))
    lit = np.zeros((modules, PORTS, PORTS), dtype=bool)
    for tile in manifest["aoc"]["tiles"]:
        lit[tile["module"], tile["input_port_start"]:tile["input_port_start"] + tile["column_stop"]
            - tile["column_start"], tile["output_port_start"]:tile["output_port_start"] + tile["row_stop"]
            - tile["row_start"]] = True
    assert not np.any(grey["positive"][~lit]) and not np.any(grey["negative"][~lit])
    # Each tile row uses the SLM's full range: its largest |weight| sits at full transmission (grey 255).
    for tile in manifest["aoc"]["tiles"]:
        module, rows = tile["module"], tile["row_stop"] - tile["row_start"]
        columns = tile["column_stop"] - tile["column_start"]
        window = (module, slice(tile["input_port_start"], tile["input_port_start"] + columns),
                  slice(tile["output_port_start"], tile["output_port_start"] + rows))
        peak = np.maximum(grey["positive"][window], grey["negative"][window]).max(axis=0)
        block = targets[tile_block_index(manifest["layout"], tile)]
        nonzero = np.any(block[tile["row_start"]:tile["row_stop"], tile["column_start"]:tile["column_stop"]],
                         axis=1)
        assert np.all(peak[nonzero] == 255)


# ---------------------------------------------------------------- 2. tiling and routing


def _tiling_inputs(manifest: dict) -> tuple[Placement, list[BlockShape], list[StateGroup]]:
    placement_data = dict(manifest["aoc"]["placement"])
    fields = Tile.__dataclass_fields__
    placement_data["tiles"] = [{key: tile[key] for key in fields} for tile in manifest["aoc"]["tiles"]]
    placement = Placement.from_dict(placement_data)
    blocks = [BlockShape(block_name(index), entry["row_group"], entry["column_group"], entry["rows"],
                         entry["columns"], entry["layer"])
              for index, entry in enumerate(manifest["layout"]["blocks"])]
    groups = layout_groups(manifest["layout"])
    return placement, blocks, groups


@pytest.mark.parametrize("name", ["small", "multi", "standard"])
def test_every_weight_in_exactly_one_tile_and_no_port_used_twice(models, bundles, name):
    manifest = _manifest(bundles[name])
    entries = manifest["layout"]["blocks"]
    targets = _target_blocks(models[name], manifest)
    cover = [np.zeros((entry["rows"], entry["columns"]), dtype=int) for entry in entries]
    modules = manifest["aoc"]["summary"]["modules_used"]
    inputs_used = np.zeros((modules, PORTS), dtype=int)
    outputs_used = np.zeros((modules, PORTS), dtype=int)
    for tile in manifest["aoc"]["tiles"]:
        rows, columns = tile["row_stop"] - tile["row_start"], tile["column_stop"] - tile["column_start"]
        assert 0 < rows <= PORTS and 0 < columns <= PORTS
        assert 0 <= tile["module"] < modules
        assert tile["output_port_start"] >= 0 and tile["output_port_start"] + rows <= PORTS
        assert tile["input_port_start"] >= 0 and tile["input_port_start"] + columns <= PORTS
        cover[tile_block_index(manifest["layout"], tile)][tile["row_start"]:tile["row_stop"],
                                                tile["column_start"]:tile["column_stop"]] += 1
        outputs_used[tile["module"], tile["output_port_start"]:tile["output_port_start"] + rows] += 1
        inputs_used[tile["module"], tile["input_port_start"]:tile["input_port_start"] + columns] += 1
    for index, (count, target) in enumerate(zip(cover, targets, strict=True)):
        assert np.all(count[target != 0] == 1), f"block {index}: a non-zero weight is in 0 or ≥ 2 tiles"
        assert np.all(count <= 1), f"block {index}: an entry is in two tiles"
    assert inputs_used.max() <= 1 and outputs_used.max() <= 1
    assert np.all(inputs_used.any(axis=1)) and np.all(outputs_used.any(axis=1))  # every module does work
    rows = sum(entry["rows"] for entry in entries)
    columns = sum(entry["columns"] for entry in entries)
    summary = manifest["aoc"]["summary"]
    assert summary["lower_bound"] == math.ceil(max(rows, columns) / PORTS)
    assert summary["lower_bound"] <= modules == len({tile["module"] for tile in manifest["aoc"]["tiles"]})
    if name == "multi":
        assert modules >= 2 and len(manifest["aoc"]["tiles"]) > len(entries)  # something was split


@pytest.mark.parametrize("name", ["small", "multi", "standard"])
def test_routing_graph_is_consistent(models, bundles, name):
    bundle, manifest = bundles[name], _manifest(bundles[name])
    data = json.loads((bundle / "aoc" / "routing.json").read_text())
    graph = routing_from_json(data)
    placement, blocks, groups = _tiling_inputs(manifest)
    check_routing(graph, placement, blocks, groups)

    # An independent walk over the JSON itself.
    node_ids = [tuple(node["id"]) for node in data["nodes"]]
    assert len(set(node_ids)) == len(node_ids)
    attributes = {tuple(node["id"]): node for node in data["nodes"]}
    predecessors: dict[tuple, list[tuple]] = {node: [] for node in node_ids}
    successors: dict[tuple, list[tuple]] = {node: [] for node in node_ids}
    for source, target in data["edges"]:
        source, target = tuple(source), tuple(target)
        assert (source[0], target[0]) in {("channel", "input_port"), ("output_port", "sum"), ("sum", "channel")}
        successors[source].append(target)
        predecessors[target].append(source)
    entries = manifest["layout"]["blocks"]
    destinations = {(entry["row_group"], row) for entry in entries for row in range(entry["rows"])}
    for group in manifest["layout"]["groups"]:
        for index in range(group["size"]):
            channel = ("channel", group["name"], index)
            assert attributes[channel]["channel"] == group["offset"] + index
            sums = [node for node in predecessors[channel] if node[0] == "sum"]
            if (group["name"], index) in destinations:
                assert sums == [("sum", group["name"], index)], f"{channel}: sum nodes {sums}"
                assert successors[sums[0]] == [channel]
            else:
                assert sums == []
    assert {node for node in node_ids if node[0] == "sum"} == {("sum", *key) for key in destinations}
    # Every tile input is driven by exactly its column channel; every tile output feeds its row's sum node.
    tiles = manifest["aoc"]["tiles"]
    for tile in tiles:
        entry = entries[tile_block_index(manifest["layout"], tile)]
        for offset in range(tile["column_stop"] - tile["column_start"]):
            port = ("input_port", tile["module"], tile["input_port_start"] + offset)
            assert predecessors[port] == [("channel", entry["column_group"], tile["column_start"] + offset)]
        for offset in range(tile["row_stop"] - tile["row_start"]):
            port = ("output_port", tile["module"], tile["output_port_start"] + offset)
            assert successors[port] == [("sum", entry["row_group"], tile["row_start"] + offset)]
    # Functional walk: push a random σ vector through the graph (LED ← channel, tile weights, photodetector →
    # sum → channel) and compare with Σ_blocks W σ computed block by block.
    targets = _target_blocks(models[name], manifest)
    offsets = _group_offsets(manifest)
    size = manifest["layout"]["size"]
    sigma = np.random.default_rng(11).standard_normal(size)
    led = {port: sigma[attributes[predecessors[port][0]]["channel"]]
           for port in node_ids if port[0] == "input_port"}
    detector: dict[tuple, float] = {}
    for tile_index, tile in enumerate(tiles):
        block = targets[tile_block_index(manifest["layout"], tile)]
        assert tile_index in attributes[("input_port", tile["module"], tile["input_port_start"])]["tiles"]
        columns = tile["column_stop"] - tile["column_start"]
        values = np.array([led[("input_port", tile["module"], tile["input_port_start"] + c)]
                           for c in range(columns)])
        partial = block[tile["row_start"]:tile["row_stop"], tile["column_start"]:tile["column_stop"]] @ values
        for offset, value in enumerate(partial):
            port = ("output_port", tile["module"], tile["output_port_start"] + offset)
            detector[port] = detector.get(port, 0.0) + value
    walked = np.zeros(size)
    for node in node_ids:
        if node[0] == "sum":
            total = sum(detector[port] for port in predecessors[node])
            walked[attributes[successors[node][0]]["channel"]] += total
    expected = np.zeros(size)
    for entry, block in zip(entries, targets, strict=True):
        rows = slice(offsets[entry["row_group"]], offsets[entry["row_group"]] + entry["rows"])
        columns = slice(offsets[entry["column_group"]], offsets[entry["column_group"]] + entry["columns"])
        expected[rows] += block @ sigma[columns]
    np.testing.assert_allclose(walked, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- 3. determinism


def test_two_builds_are_byte_identical(models, bundles, tmp_path):
    again = build(models["multi"], tmp_path / "again", target="aoc-48", solver="crank-nicolson", steps=4)
    first = sorted(path.relative_to(bundles["multi"]) for path in bundles["multi"].rglob("*") if path.is_file())
    second = sorted(path.relative_to(again) for path in again.rglob("*") if path.is_file())
    assert first == second
    assert any(str(path).endswith(".png") for path in first)
    for relative in first:
        assert (bundles["multi"] / relative).read_bytes() == (again / relative).read_bytes(), relative


# ---------------------------------------------------------------- 4. verify end to end


def _verify(bundle: Path, tmp_path: Path, samples: int, *extra: str) -> dict:
    report_path = tmp_path / f"{bundle.name}.verify.json"
    status = main(["verify", str(bundle), "--no-twin", "--samples", str(samples), "--json", str(report_path),
                   *extra])
    report = json.loads(report_path.read_text())
    assert status == 0, report
    assert report["passed"]
    return report


def _program_link(report: dict) -> dict:
    (link,) = [link for link in report["links"] if "bundle (ideal executor)" in link["link"]]
    return link


AOC_PASSES = ("state scaling", "tiling and placement", "routing", "α selection", "gain floors",
              "gains and transmissions", "σ fit and fold", "quantisation", "realised program", "emission")
CHECKED_PASSES = {"state scaling", "tiling and placement", "routing", "α selection", "gains and transmissions",
                  "σ fit and fold", "quantisation", "emission"}


@pytest.mark.parametrize("per_channel", [True, False])
def test_each_lowering_pass_is_timed_checked_and_dumped(models, tmp_path, capsys, per_channel):
    """``--timings --verify-passes --dump-ir``: a row, a check and an IR file per lowering pass, Δt in the gains
    (one image set) or in the images (one per step factor)."""
    target = _target_file(tmp_path, "gains", f"gain: {{per_channel: {str(per_channel).lower()}}}\n")
    assert main(["build", str(models["multi"]), "-o", str(tmp_path / "bundle"), "--target", str(target),
                 "--solver", "crank-nicolson", "--steps", "4", "--timings", "--verify-passes",
                 "--dump-ir", str(tmp_path / "ir")]) == 0
    table = capsys.readouterr().err.splitlines()
    rows = {name: line[len(name):].split() for line in table for name in AOC_PASSES if line.startswith(name + " ")}
    assert set(rows) == set(AOC_PASSES)
    for name, (seconds, peak_mib, *checked) in rows.items():
        assert float(seconds) >= 0 and float(peak_mib) > 0
        assert (len(checked) == 2 and float(checked[0]) <= float(checked[1])) == (name in CHECKED_PASSES), name
    dumps = {path.stem.split("_", 1)[1]: json.loads(path.read_text()) for path in (tmp_path / "ir").iterdir()}
    quantised = dumps["quantisation"]
    assert quantised["kind"] == "AocLowering" and "spine" not in quantised
    sets = _manifest(tmp_path / "bundle")["aoc"]["summary"]["image_sets"]
    assert quantised["image_sets"]["length"] == sets and (sets == 1) == per_channel  # one per step factor
    assert dumps["routing"]["routing"]["edges"] > 0 and dumps["emission"]["kind"] == "block program"


@pytest.mark.parametrize("solver", SOLVERS)
def test_small_model_verifies_on_one_module(models, tmp_path, solver):
    bundle = build(models["small"], tmp_path / "bundle", target="aoc-48", solver=solver, steps=8)
    manifest = _manifest(bundle)
    assert manifest["aoc"]["summary"]["modules_used"] == 1
    assert manifest["report"]["verify_criterion"] == "per_step_nrmse"
    assert manifest["report"]["verify_tolerance"] == pytest.approx(1e-2)
    link = _program_link(_verify(bundle, tmp_path, 64))
    assert link["criterion"] == "per_step_nrmse" and link["tolerance"] == pytest.approx(1e-2)
    assert len(link["per_step_nrmse"]) == 8
    assert max(link["per_step_nrmse"]) <= 1e-2
    assert max(link["per_step_nrmse"]) > 0  # quantised, so not exact


def test_network_needing_twenty_modules_verifies(tmp_path):
    module = seeded(AdmForm((256, 256, 256), d=16), 5, scale=0.5)
    model = _export(module, tmp_path / "wide.onnx", d=16)
    bundle = build(model, tmp_path / "bundle", target="aoc-48", solver="implicit-euler", steps=2)
    summary = _manifest(bundle)["aoc"]["summary"]
    assert summary["modules_used"] >= 20
    link = _program_link(_verify(bundle, tmp_path, 8))
    assert len(link["per_step_nrmse"]) == 2 and max(link["per_step_nrmse"]) <= 1e-2


def test_float_weight_target_matches_the_reference(models, tmp_path):
    target = _target_file(tmp_path, "aoc-float", "slm:\n  float_weights: true\n")
    bundle = build(models["multi"], tmp_path / "bundle", target=str(target), solver="crank-nicolson", steps=4)
    manifest = _manifest(bundle)
    assert manifest["report"]["verify_tolerance"] == 1e-9
    assert not list((bundle / "aoc").glob("images/*.png"))
    # Float transmissions realise the scaled weights exactly (to rounding).
    transmission = {path: np.load(bundle / "aoc" / f"transmission_{path}.npy") for path in RESPONSE}
    beta = np.load(bundle / "aoc" / "beta.npy")
    alpha = np.load(bundle / "channels" / "alpha.npy")
    targets = _target_blocks(models["multi"], manifest)
    offsets = _group_offsets(manifest)
    for tile in manifest["aoc"]["tiles"]:
        index = tile_block_index(manifest["layout"], tile)
        entry = manifest["layout"]["blocks"][index]
        rows, columns = tile["row_stop"] - tile["row_start"], tile["column_stop"] - tile["column_start"]
        outputs = slice(tile["output_port_start"], tile["output_port_start"] + rows)
        inputs = slice(tile["input_port_start"], tile["input_port_start"] + columns)
        channels = offsets[entry["row_group"]] + np.arange(tile["row_start"], tile["row_stop"])
        signed = (transmission["positive"][tile["module"], inputs, outputs]
                  - transmission["negative"][tile["module"], inputs, outputs]).T
        got = (beta[tile["module"], outputs] / (1.0 - alpha[channels]))[:, None] * signed
        want = targets[index][tile["row_start"]:tile["row_stop"], tile["column_start"]:tile["column_stop"]]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * np.max(np.abs(want)))
    link = _program_link(_verify(bundle, tmp_path, 32))
    assert link["tolerance"] == 1e-9 and link["relative_error"] <= 1e-9


def test_ten_bit_target_writes_16_bit_pngs_with_smaller_error(models, bundles, tmp_path):
    target = _target_file(tmp_path, "aoc-10bit", "slm:\n  bit_depth: 10\n")
    bundle = tmp_path / "bundle"
    assert main(["build", str(models["multi"]), "-o", str(bundle), "--target", str(target),
                 "--solver", "crank-nicolson", "--steps", "4"]) == 0
    manifest = _manifest(bundle)
    modules = manifest["aoc"]["summary"]["modules_used"]
    pngs = sorted((bundle / "aoc" / "images").glob("*.png"))
    assert len(pngs) == 2 * modules
    for png in pngs:
        assert png.read_bytes()[24] == 16  # IHDR bit depth byte
        assert _png_bit_depth(png) == 16
    grey = _images(bundle, modules)
    assert grey["positive"].dtype == np.uint16 and grey["positive"].max() == 1023
    targets = _target_blocks(models["multi"], manifest)
    realised_10, bounds_10, _ = _reconstruct(bundle, manifest, 10)
    base = _manifest(bundles["multi"])
    realised_8, _, _ = _reconstruct(bundles["multi"], base, 8)
    targets_8 = _target_blocks(models["multi"], base)
    for index in range(len(targets)):
        error_10 = np.abs(realised_10[index] - targets[index])
        error_8 = np.abs(realised_8[index] - targets_8[index])
        assert np.all(error_10 <= bounds_10[index] * (1 + 1e-9) + 1e-15)
        scale_10, scale_8 = np.max(np.abs(targets[index])), np.max(np.abs(targets_8[index]))
        # Four times the levels: the relative error should drop about fourfold; ask for at least twofold.
        assert np.max(error_10) / scale_10 < 0.5 * np.max(error_8) / scale_8
        assert np.sqrt(np.mean(error_10 ** 2)) / scale_10 < 0.5 * np.sqrt(np.mean(error_8 ** 2)) / scale_8
    reported_10 = max(entry["max_relative"] for entry in manifest["aoc"]["weight_error"])
    reported_8 = max(entry["max_relative"] for entry in base["aoc"]["weight_error"])
    assert reported_10 < 0.5 * reported_8
    assert manifest["report"]["verify_tolerance"] == pytest.approx(1e-2 / 4)


# ---------------------------------------------------------------- 5. inspect


def test_inspect_shows_modules_bounds_utilisation_tiles_dt_and_weight_error(bundles, capsys):
    bundle = bundles["multi"]
    manifest = _manifest(bundle)
    tiles = manifest["aoc"]["tiles"]
    modules = len({tile["module"] for tile in tiles})
    entries = manifest["layout"]["blocks"]
    bound = math.ceil(max(sum(e["rows"] for e in entries), sum(e["columns"] for e in entries)) / PORTS)
    used = sum((t["row_stop"] - t["row_start"]) * (t["column_stop"] - t["column_start"]) for t in tiles)
    utilisation = used / (modules * PORTS * PORTS)
    counts: dict[int, int] = {}
    for tile in tiles:
        layer = entries[tile_block_index(manifest["layout"], tile)]["layer"]
        counts[layer] = counts.get(layer, 0) + 1
    per_layer = {str(layer): counts[layer] for layer in sorted(counts)}
    assert len(per_layer) == len(entries)  # the multi model has one block per layer

    assert main(["inspect", str(bundle), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["aoc"]
    assert data["modules_used"] == modules
    assert data["lower_bound"] == bound
    assert data["utilisation"] == pytest.approx(utilisation, rel=1e-12)
    assert data["tiles_per_layer"] == per_layer
    assert "Δt" in data["dt_placement"] and "gains" in data["dt_placement"]

    assert main(["inspect", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"modules\s+{modules} used", text)
    assert f"lower bound ⌈max(Σrows, Σcols)/ports⌉ = {bound}" in text
    assert f"utilisation {100 * utilisation:.1f}%" in text
    assert "tiles       per layer " + ", ".join(f"layer {layer}: {count}" for layer, count in per_layer.items()) in text
    assert re.search(r"^Δt\s+gains", text, re.MULTILINE)
    for index, entry in enumerate(entries):
        match = re.search(rf"{block_name(index)}\s+{entry['rows']} × {entry['columns']}\s+max (\S+)\s+rms (\S+)", text)
        assert match, f"no weight-error line for block {index}"
        assert float(match.group(1)) > 0 and float(match.group(2)) > 0


def test_inspect_json_has_weight_error_per_block(bundles, capsys):
    """The issue asks inspect --json to show the weight error per block; the JSON summary only carries the
    worst value and the formatted text lines."""
    assert main(["inspect", str(bundles["multi"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    blocks = len(data["blocks"])
    per_block = data["aoc"].get("weight_error")
    assert isinstance(per_block, list) and len(per_block) == blocks
    assert all("max_relative" in entry for entry in per_block)


# ---------------------------------------------------------------- 6. refusals


def _nothing_written(directory: Path, output: Path) -> None:
    assert not output.exists()
    leftovers = [path.name for path in directory.iterdir() if path.name.startswith(f".{output.name}")]
    assert leftovers == []


def test_unrepresentable_weight_is_refused_naming_block_distance_and_fix(tmp_path, capsys):
    module = seeded(AdmForm((16,)), 3)
    module.layers[0].weight.data[5, 1] = 1.0e3  # one huge weight in block 0 (hidden_1 ← state), row 5
    model = _export(module, tmp_path / "huge.onnx")
    target = _target_file(tmp_path, "aoc-small-alpha", "alpha:\n  max: 0.1\n")
    output = tmp_path / "bundle"
    # Explicit Euler: open phases only, so no fixed point has to contract around the huge weight.
    arguments = ["--solver", "explicit-euler", "--steps", "2"]
    assert main(["build", str(model), "-o", str(output), "--target", str(target), *arguments]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    _nothing_written(tmp_path, output)
    assert "block_0000 row 5" in message
    numbers = re.search(r"max \|weight\| (\S+) is (\S+)× the largest representable (\S+) .*needs α ≥ (\S+) or "
                        r"β_max ≥ (\S+)", message)
    assert numbers, message
    peak, ratio, largest, alpha_needed, beta_needed = (float(value) for value in numbers.groups())
    # The numbers agree with each other and with the target: largest = β_max / (1 − α_max).
    assert largest == pytest.approx(BETA_MAX / (1 - 0.1), rel=1e-3)
    assert ratio == pytest.approx(peak / largest, rel=1e-2)
    assert ratio > 100  # |w| = 1000 times a voltage scale ≥ 1/σ_gain_max = 0.25
    assert alpha_needed == pytest.approx(1 - BETA_MAX / peak, abs=2e-4)
    assert beta_needed == pytest.approx(peak * (1 - 0.1), rel=1e-3)
    # The suggested fixes work: α_max just above the α asked for, or β_max just above the gain asked for.
    fixed_alpha = _target_file(tmp_path, "aoc-alpha-fix", f"alpha:\n  max: {min(alpha_needed + 2e-4, 0.9999)}\n")
    assert main(["build", str(model), "-o", str(tmp_path / "a"), "--target", str(fixed_alpha), *arguments]) == 0
    fixed_beta = _target_file(tmp_path, "aoc-beta-fix",
                              f"alpha:\n  max: 0.1\ngain:\n  beta_max: {beta_needed * 1.01}\n")
    assert main(["build", str(model), "-o", str(tmp_path / "b"), "--target", str(fixed_beta), *arguments]) == 0


def test_network_needing_more_modules_than_available_is_refused(tmp_path, capsys):
    model = _export(seeded(AdmForm((64, 64)), 4), tmp_path / "wide.onnx")
    target = _target_file(tmp_path, "aoc-two-modules", "module:\n  count: 2\n")
    output = tmp_path / "bundle"
    assert main(["build", str(model), "-o", str(output), "--target", str(target), "--steps", "4"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert "only 2 are available" in message
    needed = int(re.search(r"needs (\d+) modules", message).group(1))
    assert needed > 2
    _nothing_written(tmp_path, output)


# ---------------------------------------------------------------- 7. state scaling


@pytest.mark.parametrize(("name", "solver"),
                         [("small", "heun"), ("small", "implicit-euler"), ("standard", "crank-nicolson")])
def test_scaled_program_stays_within_voltage_and_injection_limits(models, tmp_path, name, solver):
    bundle = build(models[name], tmp_path / "bundle", target="aoc-48", solver=solver, steps=4)
    manifest = _manifest(bundle)
    state = manifest["target"]["state"]
    assert min(abs(state["voltage_min"]), abs(state["voltage_max"])) == VOLTAGE_LIMIT
    assert state["injection_clip"] == INJECTION_CLIP
    program, schedule, alpha = bundle_program(Bundle(bundle))
    for seed, samples in ((0, 256), (7, 128)):  # the calibration samples and fresh ones
        noise = np.random.default_rng(seed).standard_normal((samples, program.state_dimension))
        executor = IdealExecutor(program, alpha, record_peaks=True)
        executor.run(schedule, noise)
        state_peak, drive_peak = executor.state_peak, executor.drive_peak
        # Channels written with the initial noise hold voltage_scale × x before any loop iteration.
        for group in program.groups:
            if group.role in ("state", "readout") or group.held:
                channels = slice(group.offset, group.stop)
                state_peak[channels] = np.maximum(state_peak[channels],
                                                  group.voltage_scale * np.max(np.abs(noise), axis=0))
        assert np.max(state_peak) < VOLTAGE_LIMIT, f"seed {seed}: peak |voltage| {np.max(state_peak):.3f}"
        assert np.max(drive_peak) < INJECTION_CLIP, f"seed {seed}: peak injection {np.max(drive_peak):.3f}"
        assert np.max((1 - alpha) * drive_peak) < INJECTION_CLIP
    # The scales use the range: each group's scale is at a σ-gain limit, or a voltage or injection peak is
    # near 0.8 × its limit on the calibration samples.
    noise = np.random.default_rng(0).standard_normal((256, program.state_dimension))
    executor = IdealExecutor(program, alpha, record_peaks=True)
    executor.run(schedule, noise)
    sigma = manifest["target"]["sigma"]
    for group in program.groups:
        channels = slice(group.offset, group.stop)
        use = max(np.max(executor.state_peak[channels]) / VOLTAGE_LIMIT,
                  np.max(executor.drive_peak[channels]) / INJECTION_CLIP)
        at_gain_limit = (math.isclose(group.sigma_gain, sigma["gain_min"], rel_tol=1e-9)
                         or math.isclose(group.sigma_gain, sigma["gain_max"], rel_tol=1e-9))
        assert at_gain_limit or use >= 0.6, f"group {group.name}: uses {use:.2f} of its range"


def test_step_gain_below_beta_min_is_refused_or_reported(models, tmp_path, capsys):
    """Δt goes into β at run time (β · step_scale for step-class tiles), so a small step needs a gain the
    machine may not have: with the grid [0, 1e-5, 0.5, 1] and Crank-Nicolson the smallest run-time gain of the
    velocity tiles is β · 5e-6 ≈ 3e-7, a thousand times below aoc-48's gain.beta_min 3.875e-4. The build should
    refuse (exit 2 naming the step and the gain floor) or fall back to images holding Δt; it writes the bundle
    silently."""
    grid = tmp_path / "grid.npy"
    np.save(grid, np.array([0.0, 1e-5, 0.5, 1.0]))
    output = tmp_path / "bundle"
    status = main(["build", str(models["small"]), "-o", str(output), "--grid", str(grid),
                   "--solver", "crank-nicolson"])
    if status == 2:
        message = capsys.readouterr().err
        assert "beta_min" in message or "gain" in message
        return
    assert status == 0
    manifest = _manifest(output)
    beta = np.load(output / "aoc" / "beta.npy")
    beta_min = manifest["target"]["gain"]["beta_min"]
    smallest_scale = min(phase["step_scale"] for step in manifest["phases"] for phase in step)
    for tile in manifest["aoc"]["tiles"]:
        if tile["scale_class"] in ("step", "feedback") and manifest["aoc"]["summary"]["image_sets"] == 1:
            rows = tile["row_stop"] - tile["row_start"]
            gains = beta[tile["module"], tile["output_port_start"]:tile["output_port_start"] + rows]
            assert np.all(gains * smallest_scale >= beta_min), (
                f"{tile['block']}: run-time gain {np.min(gains) * smallest_scale:.2e} < beta_min {beta_min:.2e}")
