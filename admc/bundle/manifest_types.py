"""The manifest's field types, and the interface of a target's own manifest section (``manifest[kind]``).

Requires: pydantic 2. Guarantees: the type aliases here are the manifest schema's (``manifest_schema``) and
every target section's vocabulary (strict, finite, bounded); a target that writes a section of its own
declares its model, a :class:`TargetSection`, on its backend (``TargetBackend.manifest_section``), and the
manifest schema validates ``manifest[kind]`` with it, then calls its three methods. Errors are AdmcErrors
naming the file and the dotted field (:func:`field_error`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from admc.core.errors import AdmcError
from admc.ir.program import SCALE_CLASSES

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Count = Annotated[int, Field(ge=0, le=10_000_000)]
Positive = Annotated[int, Field(ge=1, le=10_000_000)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Coefficient = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]
ScaleClass = Literal[SCALE_CLASSES]  # type: ignore[valid-type]
BlockName = Annotated[str, Field(pattern=r"^block_[0-9]{4,7}$")]
PathNames = dict[Literal["positive", "negative"], str]  # a payload per optical path or device side

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

# Accepted dtypes and the shape (or list of allowed shapes; None: any length there) of a payload array.
ExpectedArray = tuple[tuple[str, ...], Any]


def field_error(label: str, field: str, message: str) -> AdmcError:
    """The one-line error for ``field`` (dotted) of the manifest ``label``."""
    return AdmcError(f"{label}: field '{field}': {message}")


class Section(BaseModel):
    """A strict part of the manifest: unknown fields refused, numbers finite."""

    model_config = STRICT


class TargetSection(BaseModel):
    """A target's own section. Fields that readers act on are typed and checked; informative fields the
    target adds later are allowed (the manifest digest covers them)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    def payload_references(self) -> list[tuple[str, str]]:
        """(dotted field inside the section, payload name) of every payload the section names."""
        return []

    def check(self, manifest: Any, target: Any, label: str, key: str) -> None:
        """Refuse (``field_error``, fields dotted from ``key``) a section that disagrees with the manifest's
        layout or with the target description ``target``."""

    def expected_arrays(self, manifest: Any, target: Any) -> dict[str, ExpectedArray]:
        """Payload name -> the dtypes and shape of every array of the section a reader loads."""
        return {}


def modules_used(tiles: list) -> int:
    """Modules (crossbars) a placement's tiles occupy, numbered from 0."""
    return 1 + max(tile.module for tile in tiles)
