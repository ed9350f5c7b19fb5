"""Acceptance of an α choice: its closed loops settle on fresh seeded samples, or the build is refused.

Requires: the program, its schedule, the α table chosen and the target's settle tolerance. Guarantees:
``settle_on_fresh_samples`` runs ``ACCEPTANCE_SAMPLES`` samples drawn with ``ACCEPTANCE_SEED`` (not the samples
α was chosen on, seed 7, nor the loop budget's, seed 1; a conditional program's with conditions drawn by
``conditions(program, samples, ACCEPTANCE_SEED)``, as the machine's loops always carry one) through the whole
schedule with the executor's own arithmetic and returns the iterations of every phase, or the executor's
``ConvergenceError`` (which names the step and phase) when a loop does not settle within ``ACCEPTANCE_LIMIT``
iterations or diverges; the first ``ACCEPTANCE_SAMPLES[0]`` of them run alone first, and a failure there is the
answer (``samples`` says how many ran).
``smallest_settling_steps`` finds, by doubling then bisection on a uniform grid of the same solver, the fewest
steps at which ``choose`` (the α pass itself, acceptance included) builds a program that settles: T_min is
what the pass can build, not a formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.core.schedule import time_grid
from admc.ir.program import BlockProgram, Schedule, tabulate_static_injection
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor, float32_products_for

if TYPE_CHECKING:
    from admc.runtime.conditioning import ConditionSampler

# Samples: as many as ACCEPTANCE_WORK channel-samples allow, between these (the run is one vectorised batch;
# a rare sample whose loop never settles — 1 in 64 on some random programs — needs hundreds to be seen: 512
# up to 78 channels, 606 → 512 on two moons, 40 at 1,000 channels, 16 from 2,500).
ACCEPTANCE_SAMPLES = (16, 512)
ACCEPTANCE_WORK = 40_000
ACCEPTANCE_SEED = 11
# Iterations per closed phase: a loop that needs more is not one a machine's budget would run.
ACCEPTANCE_LIMIT = 5_000
# A loop whose slowest fresh sample needs more than ACCEPTANCE_LIMIT / SETTLE_MARGIN iterations is refused too:
# it is near the edge, and a sample the acceptance did not draw can need several times more (measured: a
# random program whose 32 acceptance samples settled in 1,761 had one of 64 other samples need 5,710).
SETTLE_MARGIN = 3
# The T_min search stops here and says "more than".
LARGEST_STEPS = 32


@dataclass(frozen=True)
class Acceptance:
    samples: int
    seed: int
    settled: bool
    iterations: list[int]  # per closed phase, the slowest sample's count (the loop's)
    failure: str | None = None

    def report(self) -> dict:
        return {"samples": self.samples, "seed": self.seed, "settled": self.settled,
                "largest_iterations": max(self.iterations, default=0), "failure": self.failure}


def settle_on_fresh_samples(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, tolerance: float,
                            conditions: ConditionSampler | None = None) -> Acceptance:
    """Every closed loop settles within ACCEPTANCE_LIMIT / SETTLE_MARGIN iterations on fresh samples."""
    samples = int(np.clip(ACCEPTANCE_WORK // max(program.size, 1), *ACCEPTANCE_SAMPLES))
    noise = np.random.default_rng(ACCEPTANCE_SEED).standard_normal((samples, program.state_dimension))
    # The first few samples first: a loop that does not settle runs to the iteration limit, and on the fewest
    # samples that costs a thirtieth of the whole batch (the T_min search refuses several grids in a row). A
    # choice they accept runs on the whole batch, unchanged.
    screen = ACCEPTANCE_SAMPLES[0]
    drive = None if conditions is None else conditions(program, samples, ACCEPTANCE_SEED)
    for batch in ((noise[:screen], noise) if samples > screen else (noise,)):
        executor = IdealExecutor(program, alpha, tolerance=tolerance, max_iterations=ACCEPTANCE_LIMIT // SETTLE_MARGIN,
                                 float32_products=float32_products_for(program, tolerance))
        try:
            result = executor.run(schedule, batch, _first_rows(drive, len(batch)))
        except ConvergenceError as error:
            return Acceptance(len(batch), ACCEPTANCE_SEED, False, [], str(error))
    return Acceptance(samples, ACCEPTANCE_SEED, True, [count for step in result.iterations for count in step])


def _first_rows(drive, rows: int):
    """The drive of the first ``rows`` samples (the screen's conditions are the whole batch's first ones)."""
    return None if drive is None else (lambda phase: drive(phase)[:rows])


def uniform_variant(program: BlockProgram, schedule: Schedule, steps: int) -> tuple[BlockProgram, Schedule]:
    """The program and schedule on a uniform grid of ``steps`` over the same interval (same solver)."""
    start, stop = float(schedule.grid[0]), float(schedule.grid[-1])
    uniform = build_schedule(schedule.solver, start + (stop - start) * time_grid(steps=steps),
                             schedule.fp_iterations)
    times = np.array([phase.time for phases in uniform.steps for phase in phases])
    return replace(program, static_table=tabulate_static_injection(program, times)), uniform


def smallest_settling_steps(program: BlockProgram, schedule: Schedule, choose: Callable) -> int | None:
    """Fewest uniform steps (above the schedule's) at which ``choose(program, schedule)`` succeeds; None when
    none up to ``LARGEST_STEPS`` does."""
    def builds(steps: int) -> bool:
        try:
            choose(*uniform_variant(program, schedule, steps))
        except AdmcError:
            return False
        return True

    low = len(schedule.steps)
    high = low + 1
    while not builds(high):
        low, high = high, 2 * high
        if high > LARGEST_STEPS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if builds(middle) else (middle, high)
    return high
