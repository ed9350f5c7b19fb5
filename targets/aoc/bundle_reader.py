"""Read an AOC bundle back into weights: what the images, gains and α realise, block by block.

Guarantees: ``realised_blocks(bundle)`` gives, for each block of the manifest's layout, the matrix W̃ with
β_i·(T⁺ − T⁻)_ij = (1 − α_i)·W̃_ij, T being the transmissions the stored grey levels produce through the
target's response curve (darkness subtracted) — or the stored float transmissions for float-weight
targets. This is what the ideal executor runs and what the twin perturbs.
"""

from __future__ import annotations

import numpy as np

from admc.bundle.program_io import layout_groups
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.ir.program import block_indices, block_name
from admc.passes.routing_table import routing_json
from admc.passes.tile_cuts import BlockShape
from admc.passes.tiling import Placement, Tile
from admc.targets.aoc.emit import image_payload_name
from admc.targets.aoc.image_archive import module_image_name, unpack_images
from admc.targets.aoc.png import decode_png
from admc.targets.aoc.sigma_shape import port_scales
from admc.targets.aoc.slm import realised_weight


def image_sets(bundle: Bundle) -> list[dict]:
    section = bundle.manifest["aoc"]
    return section.get("image_sets") or [{"factors": None, "grey": section.get("grey"),
                                          "transmission": section.get("transmission")}]


def realised_transmissions(bundle: Bundle, set_index: int = 0) -> dict[str, np.ndarray]:
    """[modules, input ports, output ports] realised transmissions per optical path, of one image set."""
    entry = image_sets(bundle)[set_index]
    slm = bundle.manifest["target"]["slm"]
    if entry.get("transmission"):
        return {path: bundle.array(name) for path, name in entry["transmission"].items()}
    levels = 2 ** int(slm["bit_depth"]) - 1
    result = {}
    for path, name in entry["grey"].items():
        response = slm.get(f"response_{path}") or slm["response"]
        result[path] = realised_weight(bundle.array(name).astype(np.float64) / levels, response)
    return result


def tile_block_index(layout: dict, tile: dict) -> int:
    """The index, in the manifest's ``layout`` blocks, of the block a manifest tile belongs to (KeyError for a
    name that is not one of them)."""
    return block_indices(len(layout["blocks"]))[tile["block"]]


def tile_block(layout: dict, tile: dict) -> dict:
    """The manifest ``layout`` entry of the block a manifest tile belongs to."""
    return layout["blocks"][tile_block_index(layout, tile)]


def tile_channels(bundle: Bundle, tile: dict) -> np.ndarray:
    layout = bundle.manifest["layout"]
    block = tile_block(layout, tile)
    group = next(entry for entry in layout["groups"] if entry["name"] == block["row_group"])
    return np.arange(group["offset"] + tile["row_start"], group["offset"] + tile["row_stop"])


def set_factors(entry: dict) -> tuple[float, float, float] | None:
    factors = entry.get("factors")
    return None if factors is None else (float(factors["fixed"]), float(factors["step"]),
                                         float(factors["feedback"]))


def phase_blocks(bundle: Bundle) -> dict[tuple[float, float, float], list[np.ndarray]] | None:
    """Realised blocks of every image set, keyed by its factors (None when Δt is in the gains)."""
    sets = image_sets(bundle)
    if set_factors(sets[0]) is None:
        return None
    return {set_factors(entry): realised_blocks(bundle, index) for index, entry in enumerate(sets)}


def realised_blocks(bundle: Bundle, set_index: int = 0) -> list[np.ndarray]:
    try:
        layout = bundle.manifest["layout"]
        section = bundle.manifest["aoc"]
        beta = bundle.array(section["beta"])
        alpha = bundle.array(bundle.manifest["channels"]["alpha"])
        transmissions = realised_transmissions(bundle, set_index)
        blocks = [np.zeros((entry["rows"], entry["columns"])) for entry in layout["blocks"]]
        for tile in section["tiles"]:
            index = tile_block_index(layout, tile)
            ports_out = slice(tile["output_port_start"],
                              tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            ports_in = slice(tile["input_port_start"],
                             tile["input_port_start"] + tile["column_stop"] - tile["column_start"])
            module = tile["module"]
            signed = (transmissions["positive"][module, ports_in, ports_out]
                      - transmissions["negative"][module, ports_in, ports_out]).T
            gains = beta[module, ports_out] / (1.0 - alpha[tile_channels(bundle, tile)])
            blocks[index][tile["row_start"]:tile["row_stop"], tile["column_start"]:tile["column_stop"]] = (
                gains[:, None] * signed)
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise AdmcError(f"{bundle.path}/manifest.json: malformed aoc section ({error!r})") from None
    return blocks


def check_emitted_files(bundle: Bundle) -> None:
    """Refuse a bundle whose files the machine loads disagree with the arrays the twin and verify read:
    every module's PNG must decode to exactly its grey levels, and ``aoc/routing.json`` must equal the routing
    recomputed from the manifest's tiles and layout (so neither can be swapped with their hashes updated)."""
    section = bundle.manifest["aoc"]
    for set_index, entry in enumerate(image_sets(bundle)):
        _check_images(bundle, set_index, entry)
    if section.get("sigma_compensation"):
        _check_compensated_transmissions(bundle)
    layout = bundle.manifest["layout"]
    groups = layout_groups(layout)
    blocks = [BlockShape(block_name(index), block["row_group"], block["column_group"], block["rows"],
                         block["columns"], block["layer"]) for index, block in enumerate(layout["blocks"])]
    fields = ("block", "row_start", "row_stop", "column_start", "column_stop", "module", "output_port_start",
              "input_port_start")
    tiles = tuple(Tile(**{key: tile[key] for key in fields}) for tile in section["tiles"])
    placement = Placement(tiles, 1 + max(tile.module for tile in tiles), 0, "", "", bundle.target.module.ports)
    expected = routing_json(placement, blocks, groups).data
    label = str(bundle.path / section["routing"])
    if bundle.read_bytes(section["routing"]) != expected:
        raise AdmcError(f"{label}: the routing differs from the one the manifest's tiles and layout define")


def _check_images(bundle: Bundle, set_index: int, entry: dict) -> None:
    """Every module image of one set (files, or entries of the set's archive) decodes to its grey levels."""
    archive_name = entry.get("image_archive")
    archive = None if archive_name is None else unpack_images(bundle.read_bytes(archive_name),
                                                              str(bundle.path / archive_name))
    expected = set()
    for path, name in (entry.get("grey") or {}).items():
        grey = bundle.array(name)
        for module in range(grey.shape[0]):
            if archive is None:
                image_name = image_payload_name(set_index, module, path)
                label, present = str(bundle.path / image_name), image_name in bundle.manifest["payloads"]
            else:
                image_name = module_image_name(module, path)
                label, present = f"{bundle.path / archive_name}:{image_name}", image_name in archive
            if not present:
                raise AdmcError(f"{label}: the image of module {module} ({path} path) is not in the bundle")
            expected.add(image_name)
            image = decode_png(bundle.read_bytes(image_name) if archive is None else archive[image_name], label)
            if image.dtype != grey.dtype or not np.array_equal(image, grey[module]):
                raise AdmcError(f"{label}: the image differs from the grey levels in {bundle.path / name}; "
                                "the machine would load other weights than the bundle verifies")
    extra = sorted(set(archive or ()) - expected)
    if extra:
        raise AdmcError(f"{bundle.path / archive_name}: '{extra[0]}' is an image of no module of the bundle")


# The grey levels of a σ-compensated bundle are computed from T·k and T is then read back from them, so the
# two agree to rounding; anything larger means the verified T is not what the machine loads.
COMPENSATED_TOLERANCE = 1e-9


def input_port_channels(bundle: Bundle, modules: int, ports: int, unused: int = -1) -> np.ndarray:
    """[modules, ports] the state channel driving each input port (``unused`` where no tile reads the port)."""
    manifest = bundle.manifest
    tiles = manifest["aoc"]["tiles"]
    channels = np.full((modules, ports), unused, dtype=np.int64)
    groups = {group["name"]: group for group in manifest["layout"]["groups"]}
    for tile in tiles:
        block = tile_block(manifest["layout"], tile)
        offset = groups[block["column_group"]]["offset"]
        start = tile["input_port_start"]
        channels[tile["module"], start:start + tile["column_stop"] - tile["column_start"]] = np.arange(
            offset + tile["column_start"], offset + tile["column_stop"])
    return channels


def _check_compensated_transmissions(bundle: Bundle) -> None:
    """The images must hold the stored transmissions T times each input port's σ-shape scale k."""
    compensation = bundle.manifest["aoc"]["sigma_compensation"]
    tiles = bundle.manifest["aoc"]["tiles"]
    modules = 1 + max(tile["module"] for tile in tiles)
    channels = input_port_channels(bundle, modules, int(bundle.target.module.ports))
    per_port = port_scales(bundle.array(compensation["output_scale"]), channels)
    slm = bundle.manifest["target"]["slm"]
    levels = 2 ** int(slm["bit_depth"]) - 1
    for set_index, entry in enumerate(image_sets(bundle)):
        if not entry.get("grey"):
            continue  # a float-weight target loads its transmissions as stored: nothing else to agree with
        if not entry.get("transmission"):
            raise AdmcError(f"{bundle.path}: manifest 'aoc.image_sets.{set_index}': a σ-compensated bundle "
                            "with grey levels stores its transmissions beside them")
        for path, name in entry["grey"].items():
            response = slm.get(f"response_{path}") or slm["response"]
            loaded = realised_weight(bundle.array(name).astype(np.float64) / levels, response)
            stored = bundle.array(entry["transmission"][path])
            if loaded.shape != stored.shape or loaded.shape[0] != per_port.shape[0]:
                raise AdmcError(f"{bundle.path / entry['transmission'][path]}: shape {stored.shape} does not "
                                f"match the grey levels' {loaded.shape}")
            difference = float(np.max(np.abs(loaded - stored * per_port[:, :, None]), initial=0.0))
            if difference > COMPENSATED_TOLERANCE:
                raise AdmcError(f"{bundle.path / entry['transmission'][path]}: the transmissions times the σ-shape "
                                f"scales differ from what the grey levels in {bundle.path / name} load (by "
                                f"{difference:.3g}); the machine would load other weights than the bundle verifies")
