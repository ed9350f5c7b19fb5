"""Description sections every target with loops shares: the skip fraction α and when a loop counts as settled.

Requires: nothing. Guarantees: :class:`AlphaRange` is the ``alpha`` section of a target without other α
constraints and :func:`loop_spec` the ``loop`` section with a target's own default tolerance (both models of
``admc.targets.description_models``); the α selection and certificate passes read only these fields (never
the target's kind).
"""

from __future__ import annotations

from pydantic import create_model

from admc.targets.description_models import Section, leaf

ALPHA_PER_PHASE_DOC = "whether α can change between phases of a step (one α table per phase)"
SETTLE_TOLERANCE_DOC = "relative change per iteration at which a closed loop counts as settled (sets the loop budget)"


class AlphaRange(Section):
    """Range of α and whether it may change per phase (any α in [0, 0.99], per phase, by default)."""

    min: float = leaf("smallest analog skip fraction α", 0.0, minimum=0, maximum=1)
    max: float = leaf("largest analog skip fraction α (< 1)", 0.99, minimum=0, maximum=0.999999)
    per_phase: bool = leaf(ALPHA_PER_PHASE_DOC, True)


def loop_spec(settle_tolerance: float) -> type[Section]:
    """The ``loop`` section of a target whose loops settle at ``settle_tolerance`` unless its file says otherwise;
    a description subclasses it under a name of its own (so that its targets pickle)."""
    return create_model(
        "LoopSpec", __base__=Section, __doc__="When a closed loop counts as settled (the loop budget is the "
        "iterations to reach it).",
        settle_tolerance=(float, leaf(SETTLE_TOLERANCE_DOC, settle_tolerance, minimum=1e-15, maximum=0.5)),
    )
