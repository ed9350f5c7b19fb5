"""Turn a ``--target`` value into a validated target description.

Requires: a preset name ("ideal", "aoc", "aoc-48", "aoc-16", "rram", "rram-128") or the path of a YAML
description whose ``inherits:`` may name a preset or another file (relative to the inheriting file).
Guarantees: returns the frozen description of the class that ``KINDS`` maps its ``kind`` (own or inherited)
to; presets are read from the installed package (importlib.resources), never from the working
directory; every failure is an AdmcError naming the file (or the unknown name, with the known ones) and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import read_text
from admc.targets.aoc.description import SCHEMA as AOC_SCHEMA
from admc.targets.aoc.description import AocTarget
from admc.targets.description_schema import Schema, read_yaml_mapping, resolve_and_validate
from admc.targets.ideal.description import SCHEMA as IDEAL_SCHEMA
from admc.targets.ideal.description import IdealTarget
from admc.targets.rram.description import SCHEMA as RRAM_SCHEMA
from admc.targets.rram.description import RramTarget

Target = IdealTarget | AocTarget | RramTarget


@dataclass(frozen=True)
class TargetKind:
    """A kind of target: the schema its YAML is validated against and the class that describes it."""

    schema: Schema
    description: type


# The one table from a description's ``kind`` to its schema and class; the class names its backend.
KINDS: dict[str, TargetKind] = {
    "ideal": TargetKind(IDEAL_SCHEMA, IdealTarget),
    "aoc": TargetKind(AOC_SCHEMA, AocTarget),
    "rram": TargetKind(RRAM_SCHEMA, RramTarget),
}

# Preset name -> (package, resource file); None marks the built-in ideal target, which has no YAML file.
PRESETS: dict[str, tuple[str, str] | None] = {
    "ideal": None,
    "aoc-48": ("admc.targets.aoc", "presets/aoc-48.yaml"),
    "aoc-16": ("admc.targets.aoc", "presets/aoc-16.yaml"),
    "rram-128": ("admc.targets.rram", "presets/rram-128.yaml"),
}
ALIASES = {"aoc": "aoc-48", "rram": "rram-128"}


def list_presets() -> list[str]:
    """Names accepted by :func:`load_target` besides file paths (aliases included), sorted."""
    return sorted([*PRESETS, *ALIASES])


def _preset_label(name: str) -> str:
    return f"preset '{name}'"


def _open_preset(name: str) -> tuple[str, dict]:
    canonical = ALIASES.get(name, name)
    location = PRESETS[canonical]
    label = _preset_label(canonical)
    if location is None:
        return label, IdealTarget().to_dict()
    package, resource = location
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return f"{label} ({resource})", read_yaml_mapping(text, label)


def _open_file(path: Path) -> tuple[str, dict]:
    label = str(path)
    text = read_text(path, limits.TEXT_FILE_BYTES, "target file")  # regular, bounded, UTF-8 (safe_files)
    return label, read_yaml_mapping(text, label)


def _is_path_like(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or "/" in spec or "\\" in spec


def _open_reference(reference: str, from_label: str) -> tuple[str, dict]:
    """Open what ``inherits: reference`` in the file labelled ``from_label`` names."""
    if reference in PRESETS or reference in ALIASES:
        return _open_preset(reference)
    if from_label.startswith("preset "):
        raise AdmcError(f"{from_label}: field 'inherits': presets may inherit only presets, got {reference!r}")
    path = Path(from_label).parent / reference
    if not _is_path_like(reference) and not path.exists():
        known = ", ".join(list_presets())
        raise AdmcError(
            f"{from_label}: field 'inherits': {reference!r} is neither a preset ({known}) nor an existing file"
        )
    return _open_file(path)


def target_kind(kind: str, label: str) -> TargetKind:
    """The ``KINDS`` entry of ``kind``; an unknown kind is an error naming ``label``."""
    if kind not in KINDS:
        raise AdmcError(f"{label}: field 'kind': unknown target kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def _schema_for_kind(kind: str, label: str) -> Schema:
    return target_kind(kind, label).schema


def load_target(spec: str | Path) -> Target:
    """Load a target: a preset name, an alias of one, or a YAML description file."""
    if isinstance(spec, str) and (spec in PRESETS or spec in ALIASES):
        label, mapping = _open_preset(spec)
    elif isinstance(spec, Path) or _is_path_like(spec) or Path(spec).is_file():
        label, mapping = _open_file(Path(spec))
    else:
        raise AdmcError(
            f"--target: unknown target {spec!r}: not a preset ({', '.join(list_presets())}) "
            "and not a .yaml file path"
        )
    kind, data = resolve_and_validate(label, mapping, _open_reference, _schema_for_kind)
    return target_kind(kind, label).description.from_mapping(data, label)


def target_from_mapping(mapping: object, label: str) -> Target:
    """A resolved description (a bundle's ``target`` section) validated exactly like a file of its kind."""
    from admc.targets.description_schema import validate

    if not isinstance(mapping, dict) or not isinstance(mapping.get("kind"), str):
        raise AdmcError(f"{label}: field 'kind': required field is missing or not a string")
    kind = mapping["kind"]
    data = validate(mapping, _schema_for_kind(kind, label), label, complete=True)
    return target_kind(kind, label).description.from_mapping(data, label)
