"""Emit an AOC program: payloads (PNG images, exact arrays, gains, routing) and the manifest's ``aoc`` section.

Requires: the lowered program (scaled groups and blocks, α, placement, routing file, β, image sets, headroom and
weight errors). Guarantees: nothing is changed in place (the lowering's emission pass attaches the section,
payloads and report returned here); every payload is listed by the bundle writer with its sha256; images are
``image[input_port, output_port]`` (row = LED source, column = photodetector, the machine computes z·W),
8-bit PNG or 16-bit beyond 8 bits; the first image set keeps the flat names ``aoc/grey_*.npy`` and
``aoc/images/module_MMMM_*.png``, further sets (Δt in the images) live under ``aoc/set_KK/``.
"""

from __future__ import annotations

import json

import numpy as np

from admc.bundle.store import npy_bytes
from admc.ir.program import block_indices
from admc.targets.aoc.image_archive import IMAGE_ARCHIVE_FROM, module_image_name, pack_images
from admc.targets.aoc.png import encode_pngs

PATHS = ("positive", "negative")
# Worst per-step NRMSE of the quantised program against the reference allowed at 8 bits (issue 3's figure),
# halving with every extra bit of SLM depth.
QUANTISED_NRMSE_TOLERANCE_8_BIT = 1e-2


def verify_bound(target) -> tuple[str, float]:
    """What ``verify`` holds the program link of a bundle for ``target`` to: (criterion, bound)."""
    if target.slm.float_weights:
        return "relative_error", 1e-9
    return "per_step_nrmse", QUANTISED_NRMSE_TOLERANCE_8_BIT * 2.0 ** (8 - target.slm.bit_depth)


def _json_bytes(data) -> bytes:
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def image_payload_name(set_index: int, module: int, path: str) -> str:
    """The PNG payload of one module's image on one optical path, in image set ``set_index``."""
    prefix = "aoc/" if set_index == 0 else f"aoc/set_{set_index:02d}/"
    return f"{prefix}images/{module_image_name(module, path)}"


def image_archive_name(set_index: int) -> str:
    """The archive holding every PNG of image set ``set_index`` (bundles above ``IMAGE_ARCHIVE_FROM`` modules)."""
    return "aoc/images.zip" if set_index == 0 else f"aoc/set_{set_index:02d}/images.zip"


def image_set_payloads(index: int, image_set, modules: int, float_weights: bool) -> tuple[dict, dict]:
    prefix = "aoc/" if index == 0 else f"aoc/set_{index:02d}/"
    entry: dict = {"factors": None if image_set.factors is None else
                   dict(zip(("fixed", "step", "feedback"), image_set.factors, strict=True))}
    payloads: dict[str, bytes] = {}
    if float_weights or getattr(image_set, "effective", False):
        # Float weights, or what a measured machine realises (read back instead of the nominal response).
        entry["transmission"] = {path: f"{prefix}transmission_{path}.npy" for path in PATHS}
        for path in PATHS:
            payloads[entry["transmission"][path]] = npy_bytes(image_set.realised[path])
        if float_weights:
            return entry, payloads
    entry["grey"] = {path: f"{prefix}grey_{path}.npy" for path in PATHS}
    images = {}
    for path in PATHS:
        payloads[entry["grey"][path]] = npy_bytes(image_set.grey[path])
        encoded = encode_pngs(image_set.grey[path][:modules])
        images.update({module_image_name(module, path): encoded[module] for module in range(modules)})
    if modules > IMAGE_ARCHIVE_FROM:
        entry["image_archive"] = image_archive_name(index)
        payloads[entry["image_archive"]] = pack_images(images)
    else:
        payloads.update({f"{prefix}images/{name}": content for name, content in images.items()})
    return entry, payloads


def summary_of(placement, alpha: np.ndarray, image_sets: list, tiles: list[dict], weight_errors: list[dict],
               per_channel: bool) -> dict:
    per_layer: dict[int, int] = {}
    for entry in tiles:
        per_layer[entry["layer"]] = per_layer.get(entry["layer"], 0) + 1
    used = sum(tile.rows * tile.columns for tile in placement.tiles)
    if per_channel:
        placement_text = ("gains: Δt and Δt/2 scale the β of step-class tiles per phase; one image set serves "
                          "every step")
    else:
        placement_text = (f"images: no per-channel gains, so the step factors are in the SLM images; "
                          f"{len(image_sets)} image set(s), one per distinct (Δt, loop) factor")
    return {
        "modules_used": placement.modules_used,
        "lower_bound": placement.lower_bound,
        "tile_lower_bound": placement.tile_lower_bound,
        "layout": placement.layout,
        "placement_solver": placement.solver,
        "utilisation": used / (placement.modules_used * placement.ports ** 2),
        "tiles_per_layer": {str(layer): count for layer, count in sorted(per_layer.items())},
        "dt_placement": placement_text,
        "image_sets": len(image_sets),
        "alpha_max": float(np.max(alpha, initial=0.0)),
        "worst_weight_error_relative": max((entry["max_relative"] for entry in weight_errors), default=0.0),
    }


def summary_lines(summary: dict, weight_errors: list[dict], headroom: list[dict]) -> list[str]:
    lines = [
        f"modules     {summary['modules_used']} used ({summary['layout']}, {summary['placement_solver']}); "
        f"lower bound ⌈max(Σrows, Σcols)/ports⌉ = {summary['lower_bound']}, tiling bound "
        f"{summary['tile_lower_bound']}; utilisation {100 * summary['utilisation']:.1f}% of SLM pixels",
        "tiles       per layer " + ", ".join(f"layer {layer}: {count}"
                                             for layer, count in summary["tiles_per_layer"].items()),
        f"Δt          {summary['dt_placement']}",
        f"α           max {summary['alpha_max']:.4f}",
        "weight error per block (relative to the block's max |W|):",
    ]
    for entry in weight_errors:
        lines.append(f"  {entry['block']} {entry['rows']:>5} × {entry['columns']:<5} max "
                     f"{entry['max_relative']:.2e}  rms {entry['rms_relative']:.2e}")
    lines.append("headroom per group (limit / peak on calibration samples):")
    for entry in headroom:
        voltage, injection = entry["voltage_headroom"], entry["injection_headroom"]
        lines.append(f"  {entry['group']:<14} scale {entry['voltage_scale']:.4g}  voltage "
                     f"{'—' if voltage is None else f'{voltage:.2f}×'}  injection "
                     f"{'—' if injection is None else f'{injection:.2f}×'}")
    return lines


def aoc_section(target, scaled, alpha, placement, routing, beta, image_sets, headroom, weight_errors,
                extra_lines: tuple[str, ...] = ()) -> tuple[dict, dict[str, bytes]]:
    """The manifest's ``aoc`` section and its payloads; ``extra_lines`` end the ``admc inspect`` summary."""
    per_setting = target.chain.gain_per_setting
    payloads: dict[str, bytes] = {"aoc/beta.npy": npy_bytes(beta),
                                  "aoc/gain_setting.npy": npy_bytes(beta / per_setting),
                                  "aoc/routing.json": routing.data}
    sets = []
    for index, image_set in enumerate(image_sets):
        entry, set_payloads = image_set_payloads(index, image_set, placement.modules_used,
                                                 target.slm.float_weights)
        sets.append(entry)
        payloads.update(set_payloads)
    indices = block_indices(len(scaled.blocks))
    tiles = [{**tile.__dict__, "scale_class": scaled.blocks[indices[tile.block]].scale_class,
              "layer": scaled.blocks[indices[tile.block]].layer} for tile in placement.tiles]
    summary = summary_of(placement, alpha, image_sets, tiles, weight_errors, target.gain.per_channel)
    summary["lines"] = [*summary_lines(summary, weight_errors, headroom), *extra_lines]
    section = {
        "image_orientation": "image[input_port, output_port]: row = LED source, column = photodetector "
                             "(the machine computes z·W)",
        "beta": "aoc/beta.npy",
        # What the machine is set to (the makers' `beta`, machine units); beta = gain_per_setting × setting.
        "gain_setting": "aoc/gain_setting.npy",
        "gain_per_setting": per_setting,
        "routing": "aoc/routing.json",
        "gains_per_channel": bool(target.gain.per_channel),
        "image_sets": sets,
        "grey": sets[0].get("grey"),
        "transmission": sets[0].get("transmission"),
        "tiles": tiles,
        "placement": placement.summary(),
        "headroom": headroom,
        "weight_error": weight_errors,
        "summary": summary,
    }
    return section, payloads


def lowered_report(report: dict, target, placement) -> dict:
    """The spine's report with what verify holds the program to (informative: verify recomputes it) and the
    modules the placement uses."""
    criterion, tolerance = verify_bound(target)
    return {**report, "verify_criterion": criterion, "verify_tolerance": tolerance,
            "modules_used": placement.modules_used}
