"""The vocabulary target descriptions are declared in (one pydantic model per description), and admc's wording
of their validation errors.

Requires: pydantic 2. A description is a :class:`Section` subclass whose fields are leaves (``bool``, ``str``,
a ``Literal`` of choices, ``int``/``float`` with ``leaf(..., minimum=, maximum=)``, lists built with
:func:`numbers` / :func:`integers`, any of them ``| None`` when nullable) or sections (``section()``).
Guarantees: a :class:`Section` is strict and frozen (unknown fields refused; bools, strings, choices and
list lengths exact; numbers finite and within their bounds; lists held as tuples); an absent section is
validated as ``{}`` so its required leaves are reported. :func:`describe_error` turns pydantic's error into
admc's one-line message naming the file and the dotted field (by its YAML name), worded from the field's
declaration: its type, bounds, length, choices and documentation.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.fields import FieldInfo

from admc.core.errors import AdmcError

REQUIRED: Any = ...
"""The default of a leaf a complete description must set."""


class Section(BaseModel):
    """A target description or one of its sections: strict, frozen, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def leaf(doc: str, default: Any = REQUIRED, minimum: float | None = None, maximum: float | None = None,
         length: int | None = None) -> Any:
    """A leaf field: one line of documentation, its default (none: required), its bounds and list length."""
    sized = {} if length is None else {"min_length": length, "max_length": length}
    return Field(default, description=doc, ge=minimum, le=maximum, **sized)


def section(name: str | None = None) -> Any:
    """A section field; ``name``: its name in the YAML when the attribute's differs."""
    return Field(default_factory=dict, validate_default=True, alias=name)


def numbers(minimum: float | None = None, maximum: float | None = None) -> Any:
    """A list of numbers, each within [minimum, maximum]; held as a tuple, written as a list."""
    return Annotated[list[Annotated[float, Field(ge=minimum, le=maximum)]], AfterValidator(tuple),
                     PlainSerializer(list)]


def integers(minimum: int | None = None, maximum: int | None = None) -> Any:
    """A list of integers, each within [minimum, maximum]; held as a tuple, written as a list."""
    return Annotated[list[Annotated[int, Field(ge=minimum, le=maximum)]], AfterValidator(tuple),
                     PlainSerializer(list)]


# -- reading a declaration back (for messages) ---------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """What a leaf's declaration says, as the messages word it."""

    type: str  # int, float, bool, str, int_list, float_list
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    length: int | None = None
    choices: tuple[str, ...] | None = None


def _bounds(metadata: list) -> dict:
    found: dict = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_bounds(item.metadata))
        elif isinstance(item, annotated_types.Ge):
            found["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            found["maximum"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            found["length"] = item.min_length
    return found


def _unwrap(annotation: Any, metadata: list) -> tuple[Any, list]:
    """The annotation without ``| None`` and ``Annotated``, and every constraint found on the way."""
    metadata = list(metadata)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(argument for argument in typing.get_args(annotation) if argument is not type(None))
    if typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += extra
    return annotation, metadata


def leaf_of(info: FieldInfo) -> Leaf:
    """The :class:`Leaf` a field's declaration describes."""
    annotation, metadata = _unwrap(info.annotation, info.metadata)
    bounds = _bounds(metadata)
    doc = info.description or ""
    if typing.get_origin(annotation) is Literal:
        return Leaf("str", doc, choices=tuple(typing.get_args(annotation)))
    if typing.get_origin(annotation) is list:
        item, item_metadata = _unwrap(typing.get_args(annotation)[0], [])
        return Leaf(f"{item.__name__}_list", doc, length=bounds.get("length"), **_bounds(item_metadata))
    return Leaf(annotation.__name__, doc, bounds.get("minimum"), bounds.get("maximum"))


def yaml_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by their YAML names (aliases where given)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def fields_by_any_name(model: type[BaseModel]) -> dict[str, tuple[str, FieldInfo]]:
    """A model's fields by attribute name and YAML name (pydantic's error locations use either), each with its
    YAML name."""
    found = {}
    for name, info in model.model_fields.items():
        found[name] = found[info.alias or name] = (info.alias or name, info)
    return found


def is_section(info: FieldInfo) -> bool:
    """Whether a field holds a section (a model) rather than a leaf."""
    annotation = info.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# -- messages -------------------------------------------------------------------------------------------------
def describe(value: Any) -> str:
    """``value`` as a message quotes it (at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def looks_numeric(text: str) -> bool:
    """Whether ``text`` is a number YAML read as a string (e.g. ``5.0e6``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def range_text(spec: Leaf) -> str:
    """`` in [a, b]``, `` >= a`` or `` <= b`` for a leaf's bounds ("" without)."""
    if spec.minimum is not None and spec.maximum is not None:
        return f" in [{spec.minimum:g}, {spec.maximum:g}]"
    if spec.minimum is not None:
        return f" >= {spec.minimum:g}"
    if spec.maximum is not None:
        return f" <= {spec.maximum:g}"
    return ""


def _walk(model: type[BaseModel], location: tuple) -> tuple[str, FieldInfo | None, type[BaseModel] | None]:
    """(dotted YAML path of ``location``, the field it ends at (None: unknown, or the top level), the section
    model it ends in (None past a leaf))."""
    path, info, current = "", None, model
    for part in location:
        if isinstance(part, int):
            path = f"{path}[{part}]"
            continue
        name, info = str(part), None
        if current is not None and part in fields_by_any_name(current):
            name, info = fields_by_any_name(current)[part]
        path = f"{path}.{name}" if path else name
        current = info.annotation if info is not None and is_section(info) else None
    return path, info, current


def describe_error(error: Mapping, model: type[BaseModel], label: str) -> AdmcError:
    """admc's message for one of pydantic's errors (``error``) validating file ``label`` against ``model``."""
    location = tuple(error["loc"])
    value, kind = error.get("input"), error["type"]
    if kind == "extra_forbidden":  # the last key is the file's own, not a field's: quoted as written
        parent, _, holder = _walk(model, location[:-1])
        known = ", ".join(sorted(yaml_fields(holder))) if holder is not None else ""
        path = f"{parent}.{location[-1]}" if parent else str(location[-1])
        return AdmcError(f"{label}: field '{path}': unknown field (known here: {known})")
    path, info, _ = _walk(model, location)
    if info is None or is_section(info):
        return AdmcError(f"{label}: field '{path}': expected a section (mapping), got {describe(value)}")
    spec = leaf_of(info)
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
