"""The RRAM chip's own manifest section (``manifest["rram"]``): its schema and its checks against layout and target.

Requires: a manifest whose common sections passed ``admc.bundle.manifest_schema`` and the validated RRAM
description. Guarantees: :class:`RramSection` (declared by the RRAM backend as its ``manifest_section``)
types every field the bundle reader and the twin read (conductance maps, column scales, DAC and ADC
settings, tiles, periphery, timing; informative fields are allowed beside them); :meth:`RramSection.check`
refuses, naming the file and the dotted field, a placement that does not fit the target's crossbars, tiles
outside their block or their crossbar, and periphery entries of unknown groups; :meth:`expected_arrays`
gives the dtype and shape of every array the reader loads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from admc.bundle.manifest_types import (
    BlockName,
    Count,
    ExpectedArray,
    Finite,
    Name,
    Positive,
    Section,
    TargetSection,
    field_error,
)
from admc.ir.program import block_indices

Bits = Annotated[int, Field(ge=1, le=32)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Sides(Section):
    """A payload per device of the differential pair."""

    positive: str
    negative: str


class Dac(Section):
    times: str
    channels: str
    full_scale: str
    codes: str
    bits: Bits
    rate_hz: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Adc(Section):
    bits: Bits
    range: NonNegative


class Tile(Section):
    block: BlockName
    block_index: Count
    module: Count
    row_start: Count
    rows: Positive
    column_start: Count
    columns: Positive
    output_port_start: Count
    input_port_start: Count


class Placement(BaseModel):
    # The placement's report fields are informative; the ones the checks use are typed.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    modules_used: Positive
    ports: Positive


class PeripheryEntry(Section):
    group: Name
    activation: Name
    volts_per_unit: Finite
    full_scale: NonNegative


class Timing(Section):
    seconds_per_unit_model_time: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    layer_time_constant_s: NonNegative
    layers_in_series: Count
    state_rate_per_unit_time: Finite
    settling_margin: Finite
    clamped: str


class RramSection(TargetSection):
    """What an RRAM chip is programmed with (conductances, column scales, DAC waveforms, ADC range) and what
    the twin needs to run it (tiles, periphery full scales, time scale)."""

    orientation: str
    conductance: Sides
    levels: Sides | None
    column_scale: str
    tia_gain_ohm: str
    dac: Dac
    adc: Adc
    routing: str
    tiles: Annotated[list[Tile], Field(min_length=1)]
    placement: Placement
    periphery: list[PeripheryEntry]
    timing: Timing
    weight_error: list[Any] = []
    summary: dict[str, Any] = {}

    def payload_references(self) -> list[tuple[str, str]]:
        sides = [("conductance", self.conductance), *([("levels", self.levels)] if self.levels else [])]
        referenced = [(f"{name}.{side}", getattr(entry, side)) for name, entry in sides
                      for side in ("positive", "negative")]
        referenced += [("column_scale", self.column_scale), ("tia_gain_ohm", self.tia_gain_ohm),
                       ("routing", self.routing)]
        return referenced + [(f"dac.{name}", getattr(self.dac, name))
                             for name in ("times", "channels", "full_scale", "codes")]

    def check(self, manifest: Any, target: Any, label: str, key: str) -> None:
        size, crossbars = target.crossbar.size, target.crossbar.count
        modules = self.placement.modules_used
        if self.placement.ports != size or modules > crossbars:
            raise field_error(label, f"{key}.placement", f"{modules} crossbar(s) of {self.placement.ports} ports "
                              f"do not fit the target's {crossbars} of {size}")
        blocks = manifest.layout.blocks
        indices = block_indices(len(blocks))
        for index, tile in enumerate(self.tiles):
            where = f"{key}.tiles.{index}"
            if indices.get(tile.block) != tile.block_index:
                raise field_error(label, f"{where}.block_index", f"is {tile.block_index}, {tile.block} is block "
                                  f"{indices.get(tile.block)} of the layout's {len(blocks)}")
            block = blocks[tile.block_index]
            if tile.row_start + tile.rows > block.rows or tile.column_start + tile.columns > block.columns:
                raise field_error(label, where, f"rows [{tile.row_start}, +{tile.rows}) × columns "
                                  f"[{tile.column_start}, +{tile.columns}) are not inside {tile.block} "
                                  f"({block.rows} × {block.columns})")
            if tile.module >= modules or tile.input_port_start + tile.columns > size or \
                    tile.output_port_start + tile.rows > size:
                raise field_error(label, where, f"crossbar {tile.module} ports do not fit the {modules} "
                                  f"crossbar(s) of {size} ports")
        groups = {group.name for group in manifest.layout.groups}
        for index, entry in enumerate(self.periphery):
            if entry.group not in groups:
                raise field_error(label, f"{key}.periphery.{index}.group", f"names unknown group {entry.group!r}")

    def expected_arrays(self, manifest: Any, target: Any) -> dict[str, ExpectedArray]:
        modules, size = self.placement.modules_used, target.crossbar.size
        expected: dict[str, ExpectedArray] = {
            self.conductance.positive: (("<f8",), (modules, size, size)),
            self.conductance.negative: (("<f8",), (modules, size, size)),
            self.column_scale: (("<f8",), (modules, size)),
            self.tia_gain_ohm: (("<f8",), (modules, size)),
            self.dac.times: (("<f8",), (None,)),
            self.dac.channels: (("<i8",), (None,)),
            self.dac.full_scale: (("<f8",), (None,)),
            self.dac.codes: (("<i2", "<i4"), (None, None)),
        }
        if self.levels is not None:
            expected[self.levels.positive] = expected[self.levels.negative] = (("<u2",), (modules, size, size))
        return expected
