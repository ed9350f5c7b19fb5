"""The bundle manifest's schema (pydantic), checked before any reader uses a field (issue 13, item 1).

Requires: the parsed JSON of a ``manifest.json`` whose digest has already been checked (``admc.bundle.store``).
Guarantees: :func:`check_manifest` raises :class:`AdmcError` naming the file and the dotted field unless
- the sections admc writes today (``format``, ``source``, ``layout``, ``channels``, ``static_injection``,
  ``solver``, ``phases``, ``payloads``, ``target``) hold exactly the fields and
  types of this schema (unknown fields inside them are refused; numbers are finite and in range);
- they agree with each other: state groups tile the state contiguously from 0, blocks and injections name
  existing groups with matching sizes, the readout group exists, steps = phases = grid points − 1, the grid
  increases strictly, every phase reads only ``x`` or an earlier phase of its step and its time is in the
  static injection table, and every payload a section names is listed (with a sha256) in ``payloads``;
- the ``target`` section passes the target description schema of its kind (the same checks as a YAML file);
- the target's own section (``manifest[kind]``) passes the model the target's backend declares
  (``TargetBackend.manifest_section``, an ``admc.bundle.manifest_types.TargetSection``) and that model's
  checks against the layout and the target; a bundle for a target without one has none, and every block of
  it carries its weights.
Further *top-level* sections (other branches' "convergence", "calibration", "conditions", …) are allowed:
the manifest digest covers them, and their own readers validate them.
:func:`expected_arrays` lists the dtype and shape each payload array must have.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from admc.bundle.manifest_types import (
    SHA256,
    Count,
    ExpectedArray,
    Finite,
    Name,
    Positive,
    ScaleClass,
    Section,
    TargetSection,
)
from admc.bundle.manifest_types import field_error as _fail
from admc.core.errors import AdmcError
from admc.core.limits import FP_ITERATIONS, PHASES, STEPS
from admc.core.safe_files import check_member_name
from admc.ir.adm import IDENTITY, is_activation
from admc.ir.program import CLOSED, OPEN
from admc.passes.continuous_time import CONTINUOUS
from admc.passes.step_phases import SOLVERS
from admc.targets.backends import resolve_backend
from admc.targets.loader import KINDS, target_from_mapping


def _group_activation(name: str) -> str:
    """What a state group feeds its readers: an IR activation, identity, or "none" (read by no block)."""
    if not (is_activation(name) or name in (IDENTITY, "none")):
        raise ValueError(f"'{name}' is not an activation (tanh, relu, algebraic_sigmoid:<c>, identity, none)")
    return name


GroupActivation = Annotated[str, AfterValidator(_group_activation)]
LOOP_KINDS = (OPEN, CLOSED, CONTINUOUS)


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
    _target_section: TargetSection | None = PrivateAttr(default=None)

    @property
    def target_section(self) -> TargetSection | None:
        """The target's own section (``manifest[kind]``), validated by the model its backend declares."""
        return self._target_section


def _dotted(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


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


def _check_payload_names(manifest: Manifest, label: str) -> None:
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
    section = manifest.target_section
    if section is not None:
        kind = manifest.target["kind"]
        referenced += [(f"{kind}.{field}", name) for field, name in section.payload_references()]
    elif any(block.payload is None for block in manifest.layout.blocks):
        # Without a section of its own the bundle is the program itself: every block holds its weights.
        raise _fail(label, "layout.blocks", "a block of a bundle whose target has no section of its own has no "
                    "weight payload")
    for field, name in referenced:
        if name not in manifest.payloads:
            raise _fail(label, field, f"names {name!r}, which is not a payload listed with its sha256")


def _check_target(data: dict, label: str) -> Any:
    """The resolved target description, validated like a YAML file of its kind (AdmcError otherwise)."""
    return target_from_mapping(data["target"], f"{label}: section 'target'")


def _section_model(kind: str, label: str) -> type[TargetSection] | None:
    backend = resolve_backend(KINDS[kind].backend, f"{label}: target kind {kind!r}")
    return None if backend is None else backend.manifest_section


def _check_target_section(manifest: Manifest, target: Any, label: str) -> TargetSection | None:
    """The target's own section, validated by its backend's model and checked; a section of another kind of
    target is refused."""
    kind, extra = target.kind, manifest.model_extra or {}
    for other in sorted(KINDS.keys() - {kind}):
        if other in extra and _section_model(other, label) is not None:
            raise _fail(label, other, f"present in a bundle whose target is of kind {kind!r}")
    model = _section_model(kind, label)
    if model is None:
        return None
    if kind not in extra:
        raise _fail(label, kind, f"a bundle for a target of kind {kind!r} needs its {kind!r} section")
    try:
        section = model.model_validate(extra[kind])
    except ValidationError as error:
        first = error.errors()[0]
        raise _fail(label, _dotted((kind, *first["loc"])), first["msg"]) from None
    section.check(manifest, target, label, kind)
    return section


def check_manifest(data: object, label: str) -> tuple[Manifest, Any]:
    """Validate a parsed manifest; return the model (its target section attached) and the validated target
    description."""
    if not isinstance(data, dict):
        raise AdmcError(f"{label}: expected a JSON object at top level, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise _fail(label, _dotted(first["loc"]), first["msg"]) from None
    _check_groups(manifest, label)
    _check_phases(manifest, label)
    target = _check_target(data, label)
    manifest._target_section = _check_target_section(manifest, target, label)
    _check_payload_names(manifest, label)
    return manifest, target


def expected_arrays(manifest: Manifest, target: Any) -> dict[str, ExpectedArray]:
    """Payload name → (accepted dtypes, shape or list of allowed shapes) for every array a reader loads (None:
    any length there)."""
    layout = manifest.layout
    groups = {group.name: group for group in layout.groups}
    size, dimension = layout.size, layout.state_dimension
    times = None
    expected: dict[str, ExpectedArray] = {
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
    if manifest.target_section is not None:
        expected.update(manifest.target_section.expected_arrays(manifest, target))
    return expected


def finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
