"""The bundle manifest's schema (pydantic), checked before any reader uses a field (issue 13, item 1).

Requires: the parsed JSON of a ``manifest.json`` whose digest has already been checked (``admc.bundle.store``).
Guarantees: :func:`check_manifest` raises :class:`AdmcError` naming the file and the dotted field unless
- the sections admc writes today (``format``, ``source``, ``layout``, ``channels``, ``static_injection``,
  ``solver``, ``phases``, ``payloads``, ``target``, and ``aoc`` when present) hold exactly the fields and
  types of this schema (unknown fields inside them are refused; numbers are finite and in range);
- they agree with each other: state groups tile the state contiguously from 0, blocks and injections name
  existing groups with matching sizes, the readout group exists, steps = phases = grid points − 1, the grid
  increases strictly, every phase reads only ``x`` or an earlier phase of its step and its time is in the
  static injection table, every payload a section names is listed (with a sha256) in ``payloads``, and AOC
  tiles sit inside their block, their module and the module's ports;
- the ``target`` section passes the target description schema of its kind (the same checks as a YAML file).
Further *top-level* sections (other branches' "convergence", "calibration", "conditions", …) are allowed:
the manifest digest covers them, and their own readers validate them.
:func:`expected_arrays` lists the dtype and shape each payload array must have.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from admc.core.errors import AdmcError
from admc.core.limits import FP_ITERATIONS, PHASES, STEPS
from admc.core.safe_files import check_member_name
from admc.ir.adm import IDENTITY, is_activation
from admc.ir.program import CLOSED, OPEN, SCALE_CLASSES
from admc.passes.continuous_time import CONTINUOUS
from admc.passes.step_phases import SOLVERS

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Count = Annotated[int, Field(ge=0, le=10_000_000)]
Positive = Annotated[int, Field(ge=1, le=10_000_000)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Coefficient = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)



def _group_activation(name: str) -> str:
    """What a state group feeds its readers: an IR activation, identity, or "none" (read by no block)."""
    if not (is_activation(name) or name in (IDENTITY, "none")):
        raise ValueError(f"'{name}' is not an activation (tanh, relu, algebraic_sigmoid:<c>, identity, none)")
    return name


GroupActivation = Annotated[str, AfterValidator(_group_activation)]
LOOP_KINDS = (OPEN, CLOSED, CONTINUOUS)
ScaleClass = Literal[SCALE_CLASSES]  # type: ignore[valid-type]


class Section(BaseModel):
    model_config = STRICT


class Source(Section):
    payload: str
    format: Literal["onnx", "pt2"]
    name: Annotated[str, Field(max_length=4096)]
    sha256: SHA256
    state_input: Name
    time_input: Name | None
    state_dimension: Positive


class Group(Section):
    name: Name
    offset: Count
    size: Positive
    activation: GroupActivation
    held: bool
    role: Name
    voltage_scale: Annotated[float, Field(allow_inf_nan=False, gt=0)] = 1.0
    sigma_gain: Annotated[float, Field(allow_inf_nan=False, gt=0)] = 1.0


class Block(Section):
    row_group: Name
    column_group: Name
    scale_class: ScaleClass
    layer: Count
    rows: Positive
    columns: Positive
    payload: str | None = None


class Injection(Section):
    group: Name
    kind: Literal["inject", "feedback"]
    payload: str
    identity: bool


class Layout(Section):
    kind: Name
    state_dimension: Positive
    size: Positive
    groups: Annotated[list[Group], Field(min_length=1)]
    blocks: list[Block]
    injections: list[Injection]
    readout_group: Name
    open_iterations: Annotated[int, Field(ge=0, le=100_000)]
    notes: list[Annotated[str, Field(max_length=4096)]]


class Channels(Section):
    alpha: str


class StaticInjectionSection(Section):
    times: str
    constants: dict[ScaleClass, str]
    time_tables: dict[ScaleClass, str]


class Solver(Section):
    name: Literal[SOLVERS]  # type: ignore[valid-type]
    fp_iterations: Annotated[int, Field(ge=1, le=FP_ITERATIONS)] | None
    grid: Annotated[list[Finite], Field(min_length=2, max_length=STEPS + 1)]
    steps: Annotated[int, Field(ge=1, le=STEPS)]

    @field_validator("grid")
    @classmethod
    def _increasing(cls, grid: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in zip(grid, grid[1:], strict=False)):
            raise ValueError("grid must increase strictly")
        return grid


def _pair(value: list) -> list:
    if len(value) != 2 or not isinstance(value[0], str) or not finite_number(value[1]) or abs(value[1]) > 1e6:
        raise ValueError("expected a pair [source name, finite coefficient]")
    return value


Pair = Annotated[list[Any], AfterValidator(_pair)]


class PhaseEntry(Section):
    loop: Literal[LOOP_KINDS]  # type: ignore[valid-type]
    step_scale: Annotated[float, Field(allow_inf_nan=False, ge=0, le=1e3)]
    time: Finite
    inject: list[Pair]
    hold: list[Pair]
    init: list[Pair]


class Tile(BaseModel):
    # Extra per-tile fields are the AOC backend's to add; the ones the readers use are checked.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    block: Annotated[str, Field(pattern=r"^block_[0-9]{4,7}$")]
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


PathNames = dict[Literal["positive", "negative"], str]


class ImageSetEntry(Section):
    factors: Factors | None
    grey: PathNames | None = None
    transmission: PathNames | None = None

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


class AocSection(BaseModel):
    # The chain engineer adds informative fields here; the fields readers act on are typed and checked.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    beta: str
    routing: str
    gains_per_channel: bool
    image_sets: Annotated[list[ImageSetEntry], Field(min_length=1, max_length=10_000)]
    tiles: Annotated[list[Tile], Field(min_length=1)]
    summary: dict[str, Any] = {}
    headroom: list[Any] = []
    weight_error: list[Any] = []


class Manifest(BaseModel):
    # Extra top-level sections are other features' (covered by the digest); the known ones are strict.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    format: Literal["admc-bundle"]
    format_version: int
    manifest_digest: SHA256
    admc_version: Annotated[str, Field(max_length=64)]
    target: dict[str, Any]
    source: Source
    report: dict[str, Any]
    layout: Layout
    channels: Channels
    static_injection: StaticInjectionSection
    solver: Solver
    phases: Annotated[list[Annotated[list[PhaseEntry], Field(min_length=1, max_length=FP_ITERATIONS + 2)]],
                      Field(min_length=1, max_length=STEPS)]
    payloads: dict[str, SHA256]
    aoc: AocSection | None = None


def _dotted(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def _fail(label: str, field: str, message: str) -> AdmcError:
    return AdmcError(f"{label}: field '{field}': {message}")


def _check_groups(manifest: Manifest, label: str) -> dict[str, Group]:
    layout = manifest.layout
    groups: dict[str, Group] = {}
    offset = 0
    for index, group in enumerate(layout.groups):
        if group.name in groups:
            raise _fail(label, f"layout.groups.{index}.name", f"group {group.name!r} appears twice")
        if group.offset != offset:
            raise _fail(label, f"layout.groups.{index}.offset",
                        f"is {group.offset}, expected {offset} (groups are contiguous from 0)")
        groups[group.name] = group
        offset += group.size
    if offset != layout.size:
        raise _fail(label, "layout.size", f"is {layout.size} but the groups hold {offset} channels")
    if layout.readout_group not in groups:
        raise _fail(label, "layout.readout_group", f"names unknown group {layout.readout_group!r}")
    if layout.state_dimension != manifest.source.state_dimension:
        raise _fail(label, "layout.state_dimension", f"is {layout.state_dimension}, the source's is "
                    f"{manifest.source.state_dimension}")
    if groups[layout.readout_group].size != layout.state_dimension:
        raise _fail(label, "layout.readout_group", "has a size different from the state dimension")
    for index, block in enumerate(layout.blocks):
        for role, name, count in (("row", block.row_group, block.rows), ("column", block.column_group,
                                                                          block.columns)):
            if name not in groups:
                raise _fail(label, f"layout.blocks.{index}.{role}_group", f"names unknown group {name!r}")
            if groups[name].size != count:
                raise _fail(label, f"layout.blocks.{index}.{role}s",
                            f"is {count}, group {name!r} has {groups[name].size} channels")
    for index, part in enumerate(layout.injections):
        if part.group not in groups:
            raise _fail(label, f"layout.injections.{index}.group", f"names unknown group {part.group!r}")
    return groups


def _check_phases(manifest: Manifest, label: str) -> None:
    solver = manifest.solver
    total = sum(len(phases) for phases in manifest.phases)
    if total > PHASES:
        raise _fail(label, "phases", f"{total} phases in all, more than {PHASES}")
    if solver.steps != len(manifest.phases) or len(solver.grid) != solver.steps + 1:
        raise _fail(label, "solver.steps", f"is {solver.steps}, with {len(manifest.phases)} steps of phases and "
                    f"{len(solver.grid)} grid points (expected steps + 1)")
    for step, phases in enumerate(manifest.phases):
        for index, phase in enumerate(phases):
            known = {"x", *(f"phase:{earlier}" for earlier in range(index))}
            for key in ("inject", "hold", "init"):
                for source, _ in getattr(phase, key):
                    if source not in known:
                        raise _fail(label, f"phases.{step}.{index}.{key}",
                                    f"reads {source!r}, which is not 'x' or an earlier phase of the step")


def _check_payload_names(manifest: Manifest, data: dict, label: str) -> None:
    for name in manifest.payloads:
        check_member_name(name, f"{label}: field 'payloads'")
    referenced = [("source.payload", manifest.source.payload), ("channels.alpha", manifest.channels.alpha),
                  ("static_injection.times", manifest.static_injection.times)]
    referenced += [(f"static_injection.constants.{key}", value)
                   for key, value in manifest.static_injection.constants.items()]
    referenced += [(f"static_injection.time_tables.{key}", value)
                   for key, value in manifest.static_injection.time_tables.items()]
    referenced += [(f"layout.blocks.{index}.payload", block.payload)
                   for index, block in enumerate(manifest.layout.blocks) if block.payload is not None]
    referenced += [(f"layout.injections.{index}.payload", part.payload)
                   for index, part in enumerate(manifest.layout.injections)]
    if manifest.aoc is not None:
        referenced += [("aoc.beta", manifest.aoc.beta), ("aoc.routing", manifest.aoc.routing)]
        for index, entry in enumerate(manifest.aoc.image_sets):
            for form in ("grey", "transmission"):
                for path, name in (getattr(entry, form) or {}).items():
                    referenced.append((f"aoc.image_sets.{index}.{form}.{path}", name))
    elif manifest.target.get("kind") == "ideal" and any(block.payload is None for block in manifest.layout.blocks):
        raise _fail(label, "layout.blocks", "a block of an ideal-target bundle has no weight payload")
    for field, name in referenced:
        if name not in manifest.payloads:
            raise _fail(label, field, f"names {name!r}, which is not a payload listed with its sha256")


def _check_target(data: dict, label: str) -> Any:
    """The resolved target description, validated like a YAML file of its kind (AdmcError otherwise)."""
    from admc.targets.loader import target_from_mapping

    return target_from_mapping(data["target"], f"{label}: section 'target'")


def _check_aoc(manifest: Manifest, target: Any, label: str) -> None:
    section = manifest.aoc
    if section is None:
        if getattr(target, "kind", None) == "aoc":
            raise _fail(label, "aoc", "an AOC bundle needs its 'aoc' section")
        return
    if getattr(target, "kind", None) != "aoc":
        raise _fail(label, "aoc", "present in a bundle whose target is not an AOC")
    ports, modules = target.module.ports, target.module.count
    blocks = manifest.layout.blocks
    # A build for a measured machine (top-level 'calibration') stores what that machine realises beside
    # the grey levels it loads.
    calibrated = "calibration" in (manifest.model_extra or {})
    # So does a build that compensated the description's σ shape (its images hold T·k, the transmissions T).
    calibrated = calibrated or "sigma_compensation" in (section.model_extra or {})
    for index, entry in enumerate(section.image_sets):
        if target.slm.float_weights and (entry.transmission is None or entry.grey is not None):
            raise _fail(label, f"aoc.image_sets.{index}", "a float-weight target stores float transmissions "
                        "and no grey levels")
        if not target.slm.float_weights and (entry.grey is None or (entry.transmission is not None
                                                                    and not calibrated)):
            raise _fail(label, f"aoc.image_sets.{index}", "a quantised target stores grey levels (and "
                        "transmissions only when built for a measured machine or a compensated σ shape)")
    for index, tile in enumerate(section.tiles):
        where = f"aoc.tiles.{index}"
        block_index = int(tile.block.split("_")[1])
        if block_index >= len(blocks):
            raise _fail(label, f"{where}.block", f"names {tile.block}, the layout has {len(blocks)} blocks")
        block = blocks[block_index]
        rows, columns = tile.row_stop - tile.row_start, tile.column_stop - tile.column_start
        if not (0 < rows and tile.row_stop <= block.rows and 0 < columns and tile.column_stop <= block.columns):
            raise _fail(label, where, f"rows [{tile.row_start}, {tile.row_stop}) × columns [{tile.column_start}, "
                        f"{tile.column_stop}) are not inside {tile.block} ({block.rows} × {block.columns})")
        if tile.module >= modules or tile.input_port_start + columns > ports or \
                tile.output_port_start + rows > ports:
            raise _fail(label, where, f"module {tile.module} ports do not fit the target's {modules} module(s) "
                        f"of {ports} ports")
        if tile.scale_class != block.scale_class:
            raise _fail(label, f"{where}.scale_class", f"is {tile.scale_class!r}, its block's is "
                        f"{block.scale_class!r}")


def check_manifest(data: object, label: str) -> tuple[Manifest, Any]:
    """Validate a parsed manifest; return the model and the validated target description."""
    if not isinstance(data, dict):
        raise AdmcError(f"{label}: expected a JSON object at top level, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise _fail(label, _dotted(first["loc"]), first["msg"]) from None
    _check_groups(manifest, label)
    _check_phases(manifest, label)
    _check_payload_names(manifest, data, label)
    target = _check_target(data, label)
    _check_aoc(manifest, target, label)
    modules = _modules_used(manifest)
    if manifest.aoc is not None and modules > target.module.count:
        raise _fail(label, "aoc.tiles", f"use {modules} modules, the target has {target.module.count}")
    return manifest, target


def _modules_used(manifest: Manifest) -> int:
    return 1 + max(tile.module for tile in manifest.aoc.tiles) if manifest.aoc is not None else 0


def expected_arrays(manifest: Manifest, target: Any) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Payload name → (accepted dtypes, shape or list of allowed shapes) for every array a reader loads (None:
    any length there)."""
    layout = manifest.layout
    groups = {group.name: group for group in layout.groups}
    size, dimension = layout.size, layout.state_dimension
    times = None
    expected: dict[str, tuple[tuple[str, ...], Any]] = {
        # α per channel, or per phase and channel where the target sets α per phase (admc.passes.alpha_selection).
        manifest.channels.alpha: (("<f8",), [(size,), (sum(len(step) for step in manifest.phases), size)]),
        manifest.static_injection.times: (("<f8",), (times,)),
    }
    for name in manifest.static_injection.constants.values():
        expected[name] = (("<f8",), (size,))
    for name in manifest.static_injection.time_tables.values():
        expected[name] = (("<f8",), (None, size))
    for block in layout.blocks:
        if block.payload is not None:
            expected[block.payload] = (("<f8",), (block.rows, block.columns))
    for part in layout.injections:
        expected[part.payload] = (("<f8",), (groups[part.group].size, dimension))
    if manifest.aoc is not None:
        modules, ports = _modules_used(manifest), target.module.ports
        expected[manifest.aoc.beta] = (("<f8",), (modules, ports))
        grey = ("|u1",) if target.slm.bit_depth <= 8 else ("<u2",)
        for entry in manifest.aoc.image_sets:
            for name in (entry.grey or {}).values():
                expected[name] = (grey, (modules, ports, ports))
            for name in (entry.transmission or {}).values():
                expected[name] = (("<f8",), (modules, ports, ports))
    return expected


def finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
