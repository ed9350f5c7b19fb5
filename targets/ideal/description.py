"""The ideal target: exact arithmetic, no hardware limits; used for semantics checks and exact tests.

Requires: nothing. Guarantees: ``IdealTarget.from_mapping(validate(data, SCHEMA, ...))`` round-trips with
``to_dict()``, and ``to_dict()`` is plain JSON-able data (the resolved description written into bundles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from admc.ir.adm import ALGEBRAIC_SIGMOID
from admc.targets.description_schema import Field
from admc.targets.loop_spec import AlphaRange, LoopSpec, alpha_schema, loop_schema

SCHEMA = {
    "kind": Field("str", "target kind", choices=("ideal",)),
    "name": Field("str", "target name", default="ideal"),
    "description": Field("str", "one line for reports", default="Exact arithmetic, no hardware limits"),
    "linear_channels": Field(
        "bool",
        "whether state channels may skip the sigmoid; false forces the compiler's exact fold-input rewrite",
        default=True,
    ),
    "activations": {
        "tanh": Field("bool", "σ = tanh is available", default=True),
        "relu": Field("bool", "σ = ReLU is available", default=True),
        "algebraic_sigmoid": Field("bool", "σ = u/(1+|u|^c)^(1/c) is available, for any exponent c", default=True),
    },
    # An exact machine can set any α < 1, and a fresh one per phase; it settles to rounding (float64).
    "alpha": alpha_schema(per_phase=True),
    "loop": loop_schema(settle_tolerance=1e-12),
}


@dataclass(frozen=True)
class IdealTarget:
    """An exact machine. ``linear_channels=False`` mimics a target whose every channel goes through σ."""

    name: str = "ideal"
    kind: str = "ideal"
    description: str = "Exact arithmetic, no hardware limits"
    linear_channels: bool = True
    tanh: bool = True
    relu: bool = True
    algebraic_sigmoid: bool = True
    alpha: AlphaRange = field(default_factory=AlphaRange)
    loop: LoopSpec = field(default_factory=lambda: LoopSpec(1e-12))

    # No backend: the spine program is the bundle; both kinds of solver run on exact arithmetic.
    backend: ClassVar[str | None] = None
    solver_kinds: ClassVar[frozenset[str]] = frozenset({"discrete", "continuous"})
    default_solver: ClassVar[str] = "implicit-euler"
    calibration_only_effects: ClassVar[tuple[str, ...]] = ()  # no effect needs a calibration file

    @property
    def activations(self) -> tuple[str, ...]:
        """The nonlinearities available (identity is ``linear_channels``)."""
        return tuple(name for name in ("tanh", "relu", ALGEBRAIC_SIGMOID) if getattr(self, name))

    @classmethod
    def from_mapping(cls, data: dict, label: str = "<target>") -> IdealTarget:
        """Build from a validated description (see SCHEMA)."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            description=data["description"],
            linear_channels=data["linear_channels"],
            tanh=data.get("activations", {}).get("tanh", True),
            relu=data.get("activations", {}).get("relu", True),
            algebraic_sigmoid=data.get("activations", {}).get(ALGEBRAIC_SIGMOID, True),
            alpha=AlphaRange(**data["alpha"]),
            loop=LoopSpec(**data["loop"]),
        )

    def to_dict(self) -> dict:
        """The resolved description as plain data."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "linear_channels": self.linear_channels,
            "activations": {"tanh": self.tanh, "relu": self.relu, ALGEBRAIC_SIGMOID: self.algebraic_sigmoid},
            "alpha": {"min": self.alpha.min, "max": self.alpha.max, "per_phase": self.alpha.per_phase},
            "loop": {"settle_tolerance": self.loop.settle_tolerance},
        }
