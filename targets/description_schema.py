"""Generic machinery for YAML target descriptions: reading, ``inherits:`` resolution and validation.

Requires: description files are YAML mappings (read with ``yaml.safe_load`` only); a description is a pydantic
model declared with ``admc.targets.description_models`` (one per target kind).
Guarantees: every problem raises :class:`admc.core.errors.AdmcError` with a one-line message naming the file and
the dotted field path; :func:`validate` returns the frozen model of a complete description, and with
``complete=False`` checks only what a file sets; inheritance cycles are detected rather than recursed into.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from admc.core.errors import AdmcError
from admc.targets.description_models import describe, describe_error

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


def validate(data: Any, model: type[BaseModel], label: str, complete: bool = True) -> BaseModel | None:
    """Check ``data`` against ``model``; return the model's (frozen) instance, defaults filled in.

    With ``complete=False`` only what is present is checked (unknown keys, types, ranges) and None is
    returned: used on each file of an inheritance chain before merging, so that an error names the file that
    wrote the bad field.
    """
    if not isinstance(data, Mapping):
        raise AdmcError(f"{label}: field '(top level)': expected a section (mapping), got {describe(data)}")
    try:
        instance = model.model_validate(dict(data))
    except ValidationError as error:
        problems = [problem for problem in error.errors() if complete or problem["type"] != "missing"]
        if problems:
            raise describe_error(problems[0], model, label) from None
        return None
    return instance if complete else None


def resolve_inheritance(label: str, mapping: dict, open_reference: ReferenceOpener,
                        model_for_kind: Callable[[str, str], type[BaseModel]]) -> tuple[type[BaseModel], dict]:
    """Resolve a description's inheritance and check every file in the chain; return (the model of its kind,
    the merged mapping). ``model_for_kind(kind, label)`` returns the model of a kind or raises naming the file.
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
    model = model_for_kind(kind, kind_label)
    merged: dict = {}
    for file_label, own in chain:
        validate(own, model, file_label, complete=False)
        merged = deep_merge(merged, own)
    return model, merged
