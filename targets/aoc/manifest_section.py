"""The AOC's own manifest section (``manifest["aoc"]``): its schema and its checks against layout and target.

Requires: a manifest whose common sections passed ``admc.bundle.manifest_schema`` and the validated AOC
description. Guarantees: :class:`AocSection` (declared by the AOC backend as its ``manifest_section``) holds
exactly the typed fields the readers act on (informative fields are allowed); :meth:`AocSection.check`
refuses, naming the file and the dotted field, image sets of the wrong form for the target's SLM and tiles
outside their block, their module, the module's ports or the target's modules; :meth:`expected_arrays`
gives the dtype and shape of the gains and images.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from admc.bundle.manifest_types import (
    BlockName,
    Coefficient,
    Count,
    ExpectedArray,
    PathNames,
    ScaleClass,
    Section,
    TargetSection,
    field_error,
    modules_used,
)
from admc.ir.program import block_indices


class Tile(BaseModel):
    # Extra per-tile fields are the AOC backend's to add; the ones the readers use are checked.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    block: BlockName
    module: Count
    row_start: Count
    row_stop: Count
    column_start: Count
    column_stop: Count
    input_port_start: Count
    output_port_start: Count
    scale_class: ScaleClass
    layer: Count


class Factors(Section):
    fixed: Coefficient
    step: Coefficient
    feedback: Coefficient


class ImageSetEntry(Section):
    factors: Factors | None
    grey: PathNames | None = None
    transmission: PathNames | None = None
    # Above IMAGE_ARCHIVE_FROM modules: the payload holding the set's PNGs (else one payload per image).
    image_archive: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ImageSetEntry:
        for field_name in ("grey", "transmission"):
            value = getattr(self, field_name)
            if value is not None and set(value) != {"positive", "negative"}:
                raise ValueError(f"{field_name} must name a 'positive' and a 'negative' payload")
        # Float-weight targets store transmissions only; a build for a measured machine stores both the grey
        # levels it loads and the transmissions that machine realises from them.
        if self.grey is None and self.transmission is None:
            raise ValueError("an image set needs grey levels or float transmissions")
        return self


class AocSection(TargetSection):
    """The gains, routing, image sets and tiles an AOC machine loads (the chain engineer adds informative
    fields beside them)."""

    beta: str
    routing: str
    gains_per_channel: bool
    image_sets: Annotated[list[ImageSetEntry], Field(min_length=1, max_length=10_000)]
    tiles: Annotated[list[Tile], Field(min_length=1)]
    summary: dict[str, Any] = {}
    headroom: list[Any] = []
    weight_error: list[Any] = []

    def payload_references(self) -> list[tuple[str, str]]:
        referenced = [("beta", self.beta), ("routing", self.routing)]
        for index, entry in enumerate(self.image_sets):
            for form in ("grey", "transmission"):
                referenced += [(f"image_sets.{index}.{form}.{path}", name)
                               for path, name in (getattr(entry, form) or {}).items()]
        return referenced

    def check(self, manifest: Any, target: Any, label: str, key: str) -> None:
        self._check_image_sets(manifest, target, label, key)
        self._check_tiles(manifest, target, label, key)

    def _check_image_sets(self, manifest: Any, target: Any, label: str, key: str) -> None:
        # A build for a measured machine (top-level 'calibration') stores what that machine realises beside
        # the grey levels it loads; so does a build that compensated the description's σ shape (its images
        # hold T·k, the transmissions T).
        calibrated = "calibration" in (manifest.model_extra or {}) or \
            "sigma_compensation" in (self.model_extra or {})
        for index, entry in enumerate(self.image_sets):
            if target.slm.float_weights and (entry.transmission is None or entry.grey is not None):
                raise field_error(label, f"{key}.image_sets.{index}", "a float-weight target stores float "
                                  "transmissions and no grey levels")
            if not target.slm.float_weights and (entry.grey is None or (entry.transmission is not None
                                                                        and not calibrated)):
                raise field_error(label, f"{key}.image_sets.{index}", "a quantised target stores grey levels "
                                  "(and transmissions only when built for a measured machine or a compensated σ "
                                  "shape)")

    def _check_tiles(self, manifest: Any, target: Any, label: str, key: str) -> None:
        ports, modules = target.module.ports, target.module.count
        blocks = manifest.layout.blocks
        indices = block_indices(len(blocks))
        for index, tile in enumerate(self.tiles):
            where = f"{key}.tiles.{index}"
            if tile.block not in indices:
                raise field_error(label, f"{where}.block", f"names {tile.block}, the layout has {len(blocks)} blocks")
            block = blocks[indices[tile.block]]
            rows, columns = tile.row_stop - tile.row_start, tile.column_stop - tile.column_start
            if not (0 < rows and tile.row_stop <= block.rows and 0 < columns and tile.column_stop <= block.columns):
                raise field_error(label, where, f"rows [{tile.row_start}, {tile.row_stop}) × columns "
                                  f"[{tile.column_start}, {tile.column_stop}) are not inside {tile.block} "
                                  f"({block.rows} × {block.columns})")
            if tile.module >= modules or tile.input_port_start + columns > ports or \
                    tile.output_port_start + rows > ports:
                raise field_error(label, where, f"module {tile.module} ports do not fit the target's {modules} "
                                  f"module(s) of {ports} ports")
            if tile.scale_class != block.scale_class:
                raise field_error(label, f"{where}.scale_class", f"is {tile.scale_class!r}, its block's is "
                                  f"{block.scale_class!r}")

    def expected_arrays(self, manifest: Any, target: Any) -> dict[str, ExpectedArray]:
        modules, ports = modules_used(self.tiles), target.module.ports
        expected: dict[str, ExpectedArray] = {self.beta: (("<f8",), (modules, ports))}
        grey = ("|u1",) if target.slm.bit_depth <= 8 else ("<u2",)
        for entry in self.image_sets:
            for name in (entry.grey or {}).values():
                expected[name] = (grey, (modules, ports, ports))
            for name in (entry.transmission or {}).values():
                expected[name] = (("<f8",), (modules, ports, ports))
        return expected
