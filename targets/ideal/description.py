"""The ideal target: exact arithmetic, no hardware limits; used for semantics checks and exact tests.

Requires: nothing. Guarantees: :class:`IdealTarget` is the description's one declaration (a frozen pydantic
model, ``admc.targets.description_models``); ``from_mapping(to_dict())`` rebuilds an equal target, and
``to_dict()`` is plain JSON-able data (the resolved description written into bundles).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from admc.ir.adm import ALGEBRAIC_SIGMOID
from admc.targets.description_models import Section, leaf, section
from admc.targets.description_schema import validate
from admc.targets.loop_spec import AlphaRange, loop_spec


class IdealLoop(loop_spec(settle_tolerance=1e-12)):
    """An exact machine's loops settle to rounding (float64)."""


class IdealActivations(Section):
    """The nonlinearities an exact machine computes."""

    tanh: bool = leaf("σ = tanh is available", True)
    relu: bool = leaf("σ = ReLU is available", True)
    algebraic_sigmoid: bool = leaf("σ = u/(1+|u|^c)^(1/c) is available, for any exponent c", True)


class IdealTarget(Section):
    """An exact machine. ``linear_channels=False`` mimics a target whose every channel goes through σ."""

    kind: Literal["ideal"] = leaf("target kind", "ideal")
    name: str = leaf("target name", "ideal")
    description: str = leaf("one line for reports", "Exact arithmetic, no hardware limits")
    linear_channels: bool = leaf(
        "whether state channels may skip the sigmoid; false forces the compiler's exact fold-input rewrite", True)
    activations_available: IdealActivations = section("activations")
    # An exact machine can set any α < 1, and a fresh one per phase.
    alpha: AlphaRange = section()
    loop: IdealLoop = section()

    # No backend: the spine program is the bundle; both kinds of solver run on exact arithmetic.
    backend: ClassVar[str | None] = None
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"discrete", "continuous"})
    default_solver: ClassVar[str] = "implicit-euler"
    calibration_only_effects: ClassVar[tuple[str, ...]] = ()  # no effect needs a calibration file
    # Preset name -> its file in this package; None: the built-in description (every default).
    presets: ClassVar[dict[str, str | None]] = {"ideal": None}
    aliases: ClassVar[dict[str, str]] = {}

    @property
    def activations(self) -> tuple[str, ...]:
        """The nonlinearities available (identity is ``linear_channels``)."""
        available = self.activations_available
        return tuple(name for name in ("tanh", "relu", ALGEBRAIC_SIGMOID) if getattr(available, name))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> IdealTarget:
        """Validate a complete description (``label`` names the file in errors)."""
        return validate(data, cls, label)

    def to_dict(self) -> dict:
        """The resolved description as plain data, in the YAML's field names."""
        return self.model_dump(by_alias=True)
