"""Generic machinery for YAML target descriptions: reading, ``inherits:`` resolution and schema validation.

Requires: description files are YAML mappings (read with ``yaml.safe_load`` only); a schema is a nested dict
whose leaves are :class:`Field` specs and whose inner dicts are sections.
Guarantees: every problem raises :class:`admc.core.errors.AdmcError` with a one-line message naming the file and
the dotted field path; :func:`validate` returns plain data with defaults filled in and nothing the schema
does not describe; inheritance cycles are detected rather than recursed into.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import yaml

from admc.core.errors import AdmcError

REQUIRED = object()
"""Marker for a field without a default: a complete description must set it."""

FIELD_TYPES = ("int", "float", "bool", "str", "float_list", "int_list")


@dataclass(frozen=True)
class Field:
    """One leaf of a schema: its type, allowed range, default and a line of documentation."""

    type: str
    doc: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    length: int | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"schema field type {self.type!r} is not one of {FIELD_TYPES}")


Schema = Mapping[str, Union[Field, "Schema"]]

ReferenceOpener = Callable[[str, str], tuple[str, dict]]
"""Given (reference written after ``inherits:``, label of the file that wrote it), return (label, mapping)."""


def read_yaml_mapping(text: str, label: str) -> dict:
    """Parse YAML text that must hold a mapping at top level; ``label`` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise AdmcError(f"{label}: YAML nested too deeply") from None
    except yaml.YAMLError as error:
        # The first line of a PyYAML message is enough to locate the problem in a one-line error.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AdmcError(f"{label}: not valid YAML: {first_line}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AdmcError(f"{label}: expected a mapping of fields at top level, got {type(data).__name__}")
    _check_nesting(data, label)
    return data


MAX_NESTING = 64


def _check_nesting(data: object, label: str) -> None:
    """Refuse YAML nested deeper than MAX_NESTING (iteratively: no recursion on hostile input); aliases
    that make the document refer to itself are caught the same way."""
    pending = [(data, 1)]
    visited = 0
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise AdmcError(f"{label}: YAML nested more than {MAX_NESTING} levels deep")
        visited += 1
        if visited > 10_000_000:
            raise AdmcError(f"{label}: YAML document too large once its aliases are expanded")
        if isinstance(value, dict):
            pending.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            pending.extend((child, depth + 1) for child in value)


def deep_merge(parent: Mapping, child: Mapping) -> dict:
    """Return parent overridden by child; mappings present in both are merged recursively, others replaced."""
    merged: dict = {key: value for key, value in parent.items()}
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def inheritance_chain(label: str, mapping: dict, open_reference: ReferenceOpener) -> list[tuple[str, dict]]:
    """Follow ``inherits:`` from a file to its root; return [(label, own fields)] from root to the file.

    The ``inherits`` key is removed from each mapping. A file reached twice is a cycle and an error.
    """
    chain: list[tuple[str, dict]] = []
    seen: list[str] = []
    current_label, current = label, mapping
    while True:
        if current_label in seen:
            loop = " -> ".join([*seen, current_label])
            raise AdmcError(f"{seen[-1]}: field 'inherits': inheritance cycle: {loop}")
        seen.append(current_label)
        own = dict(current)
        reference = own.pop("inherits", None)
        chain.append((current_label, own))
        if reference is None:
            break
        if not isinstance(reference, str) or not reference.strip():
            raise AdmcError(
                f"{current_label}: field 'inherits': expected a preset name or a file path, got {reference!r}"
            )
        current_label, current = open_reference(reference, current_label)
    chain.reverse()
    return chain


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def range_text(spec: Field) -> str:
    if spec.minimum is not None and spec.maximum is not None:
        return f" in [{spec.minimum:g}, {spec.maximum:g}]"
    if spec.minimum is not None:
        return f" >= {spec.minimum:g}"
    if spec.maximum is not None:
        return f" <= {spec.maximum:g}"
    return ""


def validate(data: Mapping, schema: Schema, label: str, complete: bool = True, prefix: str = "") -> dict:
    """Check ``data`` against ``schema``; return it with leaves normalised (and defaults, if ``complete``).

    The checking is pydantic's, on models generated from the schema (``admc.targets.description_models``).
    With ``complete=False`` only what is present is checked (unknown keys, types, ranges): used on each file
    of an inheritance chain before merging, so that an error names the file that wrote the bad field.
    """
    from pydantic import ValidationError

    from admc.targets.description_models import describe_error, description_model

    if not isinstance(data, Mapping):
        raise AdmcError(f"{label}: field '{prefix.rstrip('.') or '(top level)'}': expected a section (mapping), "
                        f"got {describe(data)}")
    try:
        instance = description_model(schema, complete).model_validate(dict(data))
    except ValidationError as error:
        raise describe_error(error.errors()[0], schema, label, prefix) from None
    return instance.model_dump(exclude_unset=not complete)


def resolve_and_validate(
    label: str, mapping: dict, open_reference: ReferenceOpener, schema_for_kind: Callable[[str, str], Schema]
) -> tuple[str, dict]:
    """Resolve a description's inheritance, validate every file in the chain, return (kind, merged data).

    ``schema_for_kind(kind, label)`` returns the schema of a kind or raises naming the file.
    """
    chain = inheritance_chain(label, mapping, open_reference)
    kind, kind_label = None, label
    for file_label, own in chain:
        if "kind" not in own:
            continue
        if not isinstance(own["kind"], str):
            raise AdmcError(f"{file_label}: field 'kind': expected a string, got {describe(own['kind'])}")
        if kind is not None and own["kind"] != kind:
            raise AdmcError(
                f"{file_label}: field 'kind': {own['kind']!r} conflicts with kind {kind!r} inherited from "
                f"{kind_label}"
            )
        kind, kind_label = own["kind"], file_label
    if kind is None:
        raise AdmcError(f"{label}: field 'kind': required field is missing (set it or use 'inherits:')")
    schema = schema_for_kind(kind, kind_label)
    merged: dict = {}
    for file_label, own in chain:
        validate(own, schema, file_label, complete=False)
        merged = deep_merge(merged, own)
    return kind, validate(merged, schema, label, complete=True)
