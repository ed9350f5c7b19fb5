"""Pydantic models generated from the declarative target-description tables (issue 13, item 5).

Requires: a schema as in ``admc.targets.description_schema`` (nested dicts whose leaves are ``Field``s); the
tables in ``targets/*/description.py`` stay the single source of truth — a field added there is validated
here with no other change.
Guarantees: :func:`description_model` returns a strict pydantic model (unknown fields forbidden; numbers
finite and within their ``minimum``/``maximum``; bools, strings, choices and list lengths exact; ``nullable``
leaves accept null). ``complete=True`` fills defaults and reports missing required fields (also inside
absent sections); ``complete=False`` checks only what is present. :func:`describe_error` turns pydantic's
first error into admc's one-line message naming the file and the dotted field, worded from the ``Field``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, create_model
from pydantic import Field as PydanticField

from admc.core.errors import AdmcError

_MODELS: dict[tuple[int, bool], tuple[Mapping, type[BaseModel]]] = {}


def _number(spec, integer: bool) -> Any:
    constraints = {"strict": True, "ge": spec.minimum, "le": spec.maximum}
    if not integer:
        constraints["allow_inf_nan"] = False
    return Annotated[int if integer else float, PydanticField(**constraints)]


def _leaf_annotation(spec) -> Any:
    if spec.type == "bool":
        annotation: Any = Annotated[bool, PydanticField(strict=True)]
    elif spec.type == "str":
        annotation = Literal[spec.choices] if spec.choices else Annotated[str, PydanticField(strict=True)]
    elif spec.type in ("int", "float"):
        annotation = _number(spec, spec.type == "int")
    else:
        length = {} if spec.length is None else {"min_length": spec.length, "max_length": spec.length}
        annotation = Annotated[list[_number(spec, spec.type == "int_list")], PydanticField(strict=True, **length)]
    return Optional[annotation] if spec.nullable else annotation  # noqa: UP045 - built at run time


def description_model(schema: Mapping, complete: bool, name: str = "Description") -> type[BaseModel]:
    """The (cached) pydantic model of ``schema``."""
    from admc.targets.description_schema import REQUIRED, Field

    key = (id(schema), complete)
    if key in _MODELS and _MODELS[key][0] is schema:
        return _MODELS[key][1]
    fields: dict[str, Any] = {}
    for field_name, spec in schema.items():
        if isinstance(spec, Field):
            annotation = _leaf_annotation(spec)
            if not complete:
                fields[field_name] = (annotation, None)
            elif spec.default is REQUIRED:
                fields[field_name] = (annotation, ...)
            else:
                default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
                fields[field_name] = (annotation, default)
        else:
            section = description_model(spec, complete, f"{name}_{field_name}")
            if complete:  # an absent section is validated as {} so its required leaves are reported
                fields[field_name] = (section, PydanticField(default_factory=dict, validate_default=True))
            else:
                fields[field_name] = (section, None)
    model = create_model(name, __config__=ConfigDict(extra="forbid", strict=True), **fields)
    _MODELS[key] = (schema, model)
    return model


def _path(location: tuple, prefix: str) -> str:
    text = prefix.rstrip(".")
    for part in location:
        text = f"{text}[{part}]" if isinstance(part, int) else (f"{text}.{part}" if text else str(part))
    return text


def _spec_at(schema: Mapping, keys: list[str]):
    spec: Any = schema
    for key in keys:
        spec = spec[key]
    return spec


def describe_error(error: dict, schema: Mapping, label: str, prefix: str) -> AdmcError:
    """admc's message for pydantic's error ``error`` (the first of a ValidationError) in file ``label``."""
    from admc.targets.description_schema import Field, describe, looks_numeric, range_text

    location = tuple(error["loc"])
    keys = [part for part in location if isinstance(part, str)]
    path = _path(location, prefix)
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_spec_at(schema, keys[:-1])))
        return AdmcError(f"{label}: field '{path}': unknown field (known here: {known})")
    spec = _spec_at(schema, keys)
    if not isinstance(spec, Field):
        return AdmcError(f"{label}: field '{path}': expected a section (mapping), got {describe(value)}")
    if kind == "missing":
        return AdmcError(f"{label}: field '{path}': required field is missing ({spec.doc})")
    if spec.type == "bool":
        return AdmcError(f"{label}: field '{path}': expected true or false, got {describe(value)}")
    if spec.type == "str":
        if spec.choices is not None and isinstance(value, str):
            return AdmcError(f"{label}: field '{path}': expected one of {list(spec.choices)}, got {value!r}")
        return AdmcError(f"{label}: field '{path}': expected a string, got {describe(value)}")
    is_item = bool(location) and isinstance(location[-1], int)
    if spec.type.endswith("_list") and not is_item:
        if not isinstance(value, list):
            return AdmcError(f"{label}: field '{path}': expected a list, got {describe(value)}")
        return AdmcError(f"{label}: field '{path}': expected {spec.length} entries, got {len(value)}")
    wanted = "an integer" if spec.type.startswith("int") else "a number"
    hint = " (quoted or unsigned exponent? write e.g. 5.0e+6)" if isinstance(value, str) and looks_numeric(value) \
        else ""
    return AdmcError(f"{label}: field '{path}': expected {wanted}{range_text(spec)}, got {describe(value)}{hint}")
