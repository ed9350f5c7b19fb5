"""Description fields every target shares about its loop: the skip fraction α and when a loop counts as settled.

Requires: nothing. Guarantees: ``ALPHA_SCHEMA`` / ``LOOP_SCHEMA`` are schema sections (see
``admc.targets.description_schema``) and ``AlphaRange`` / ``LoopSpec`` their frozen dataclasses; the α
selection and certificate passes read only these fields (never the target's kind).
"""

from __future__ import annotations

from dataclasses import dataclass

from admc.targets.description_schema import Field

ALPHA_PER_PHASE_DOC = "whether α can change between phases of a step (one α table per phase)"
SETTLE_TOLERANCE_DOC = "relative change per iteration at which a closed loop counts as settled (sets the loop budget)"


def alpha_per_phase_field(default: bool) -> Field:
    return Field("bool", ALPHA_PER_PHASE_DOC, default=default)


def alpha_schema(per_phase: bool) -> dict:
    """The ``alpha`` section of a target without other α constraints (any α in [0, 0.99] by default)."""
    return {
        "min": Field("float", "smallest analog skip fraction α", minimum=0, maximum=1, default=0.0),
        "max": Field("float", "largest analog skip fraction α (< 1)", minimum=0, maximum=0.999999, default=0.99),
        "per_phase": alpha_per_phase_field(per_phase),
    }


def loop_schema(settle_tolerance: float) -> dict:
    return {"settle_tolerance": Field("float", SETTLE_TOLERANCE_DOC, minimum=1e-15, maximum=0.5,
                                      default=settle_tolerance)}


@dataclass(frozen=True)
class AlphaRange:
    """Range of α and whether it may change per phase."""

    min: float = 0.0
    max: float = 0.99
    per_phase: bool = True


@dataclass(frozen=True)
class LoopSpec:
    """When a closed loop counts as settled (the loop budget is the iterations to reach it)."""

    settle_tolerance: float = 1e-6
