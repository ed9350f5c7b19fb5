"""Turn a ``--target`` value into a validated target description.

Requires: a preset name ("ideal", "aoc", "aoc-48", "aoc-16", "rram", "rram-128") or the path of a YAML
description whose ``inherits:`` may name a preset or another file (relative to the inheriting file).
Guarantees: returns the frozen description (the pydantic model) of the kind its ``kind`` (own or inherited)
names in :data:`DESCRIPTIONS`; presets are the ones each description declares, read from the installed
package (importlib.resources), never from the working directory; every failure is an AdmcError naming the
file (or the unknown name, with the known ones) and field.
"""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import read_text
from admc.targets.aoc.description import AocTarget
from admc.targets.description_schema import read_yaml_mapping, resolve_inheritance
from admc.targets.ideal.description import IdealTarget
from admc.targets.rram.description import RramTarget

Target = IdealTarget | AocTarget | RramTarget

# The one table of target descriptions: each declares its kind, presets, aliases and backend module.
DESCRIPTIONS: tuple[type, ...] = (IdealTarget, AocTarget, RramTarget)


def kind_of(description: type) -> str:
    """The ``kind`` a description class declares (the one value of its ``kind`` field)."""
    (kind,) = typing.get_args(description.model_fields["kind"].annotation)
    return kind


KINDS: dict[str, type] = {kind_of(description): description for description in DESCRIPTIONS}
# Preset name -> (description, its resource file or None for the built-in description); alias -> preset.
PRESETS: dict[str, tuple[type, str | None]] = {name: (description, resource) for description in DESCRIPTIONS
                                               for name, resource in description.presets.items()}
ALIASES: dict[str, str] = {alias: name for description in DESCRIPTIONS for alias, name in description.aliases.items()}


def list_presets() -> list[str]:
    """Names accepted by :func:`load_target` besides file paths (aliases included), sorted."""
    return sorted([*PRESETS, *ALIASES])


def _open_preset(name: str) -> tuple[str, dict]:
    canonical = ALIASES.get(name, name)
    description, resource = PRESETS[canonical]
    label = f"preset '{canonical}'"
    if resource is None:
        return label, description().to_dict()
    package = description.__module__.rpartition(".")[0]
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


def description_of_kind(kind: str, label: str) -> type:
    """The description class of ``kind``; an unknown kind is an error naming ``label``."""
    if kind not in KINDS:
        raise AdmcError(f"{label}: field 'kind': unknown target kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


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
    description, data = resolve_inheritance(label, mapping, _open_reference, description_of_kind)
    return description.from_mapping(data, label)


def target_from_mapping(mapping: object, label: str) -> Target:
    """A resolved description (a bundle's ``target`` section) validated exactly like a file of its kind."""
    if not isinstance(mapping, dict) or not isinstance(mapping.get("kind"), str):
        raise AdmcError(f"{label}: field 'kind': required field is missing or not a string")
    return description_of_kind(mapping["kind"], label).from_mapping(mapping, label)
