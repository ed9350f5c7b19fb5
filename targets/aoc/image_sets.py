"""Δt placement (docs/design.md §4): in the gains, or in the images.

With per-channel gains every phase's step scale multiplies the β of its step-class (and, in closed phases,
feedback-class) tiles, so one image set serves every step of any schedule. Without them, the scale class
factors of a phase must be in the SLM images: one image set per distinct factor triple
(fixed = 1, step = Δt or Δt/2, feedback = step scale in closed phases and 0 in open ones).

Guarantees: ``image_set_factors`` lists the distinct triples in first-use order (deterministic), and
``phase_factors`` gives the triple a phase needs, so executors find each phase's set.
"""

from __future__ import annotations

from admc.ir.program import FEEDBACK, FIXED, STEP, Phase, Schedule, block_scale

Factors = tuple[float, float, float]  # (fixed, step, feedback)


def phase_factors(phase: Phase) -> Factors:
    return tuple(block_scale(name, phase.step_scale, phase.loop) for name in (FIXED, STEP, FEEDBACK))


def image_set_factors(schedule: Schedule) -> list[Factors]:
    seen: list[Factors] = []
    for phases in schedule.steps:
        for phase in phases:
            factors = phase_factors(phase)
            if factors not in seen:
                seen.append(factors)
    return seen


def class_factor(factors: Factors, scale_class: str) -> float:
    return factors[(FIXED, STEP, FEEDBACK).index(scale_class)]
