"""Measured loop iterations of candidate α vectors on probe states: the α pass's final judge.

The spectral radius of the relaxed Jacobian is the *asymptotic* contraction factor; the loop's Jacobian is
non-normal (a block cycle), so its transient can differ from ρ^k by orders of magnitude and a candidate with
the smaller ρ may need more iterations. The count that matters is the loop's own, so ``auto`` runs every
candidate's loop from the states the seeded calibration samples enter each closed phase with, to the target's
settle tolerance, and keeps the fewest iterations.

Requires: an ``IdealExecutor`` run whose closed phases were recorded (``ProbeRecorder``): per closed phase the
compiled phase, the state entering the loop and the drive, [B, n] each. Candidates are α vectors [C, n].
Guarantees: ``probe_iterations`` returns, per candidate, the iterations its loop needs for the largest
relative change of every probe to fall to the tolerance (the executor's criterion, the executor's loop
arithmetic: its ``_apply`` with one α row per probe), or ``inf`` where a probe diverges or the count exceeds
the limit or ``patience`` × the fastest candidate's count (+2; such a candidate cannot be the fastest). All
candidates run in one batch [C · B, n]; settled candidates leave the batch. ``per_sample`` returns [C, B]
instead: per probe, one more than the last iteration (up to its candidate's count) at which that probe's
change exceeded the tolerance, so the maximum over any probes is the count of a loop over those probes alone
(exactly for all of them; for a subset exactly unless a probe's change rises above the tolerance again after
falling below it, when it is an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.runtime.executor import DIVERGENCE_BOUND, IdealExecutor, first_settled

PATIENCE = 4.0
PATIENCE_SLACK = 2


@dataclass
class PhaseProbe:
    compiled: object  # the executor's compiled phase
    start: np.ndarray  # [B, n] state entering the closed loop
    drive: np.ndarray  # [B, n] static vector plus injections
    fixed_point: np.ndarray  # [B, n] where the loop settled (the linearisation point)


class ProbeRecorder(IdealExecutor):
    """An ideal run that records, per closed phase, the loop's start state, drive and fixed point."""

    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.probes: list[PhaseProbe] = []

    def _closed(self, step, index, compiled, drive, state, result):
        start = state.copy()
        state, count, residual = super()._closed(step, index, compiled, drive, state, result)
        self.probes.append(PhaseProbe(compiled, start, np.array(drive, copy=True), state.copy()))
        return state, count, residual


def record_probes(program, schedule, noise: np.ndarray, attempts, tolerance: float, max_iterations: int,
                  float32_products: bool = False, drive=None) -> ProbeRecorder | None:
    """The probe run of the first α table ``attempts`` make (each called only if the ones before did not
    settle) whose loops settle; None when none does. ``float32_products``: the executor's (see
    ``admc.runtime.executor.float32_products_for``); ``drive``: a conditional program's per-sample drive."""
    def run(make, stall_window: int | None) -> ProbeRecorder:
        # A stalled attempt with a fallback after it is given up: its probes would be the fallback's (fixed
        # points do not depend on α).
        attempt = ProbeRecorder(program, make(), tolerance=tolerance, max_iterations=max_iterations,
                                float32_products=float32_products, stall_window=stall_window)
        attempt.run(schedule, noise, drive)
        return attempt

    found = first_settled(attempts, run)
    return None if found is None else found[1]


def adopted_probes(executor: IdealExecutor, probes: list[PhaseProbe], samples: int) -> list[PhaseProbe]:
    """Probes another run of ``executor``'s program recorded (same schedule, states in this program's units), their
    first ``samples`` samples, bound to ``executor``'s own compiled phases."""
    return [PhaseProbe(executor._compiled(probe.compiled.phase), probe.start[:samples], probe.drive[:samples],
                       probe.fixed_point[:samples]) for probe in probes]


def scaled_probes(probes: list[PhaseProbe], factor: np.ndarray) -> list[PhaseProbe]:
    """The probes of the same program with every channel's voltage multiplied by ``factor`` [n] (state scaling,
    which multiplies a group's states, drives and fixed points by its scale; exact up to rounding)."""
    return [PhaseProbe(probe.compiled, probe.start * factor, probe.drive * factor, probe.fixed_point * factor)
            for probe in probes]


def expected_slowest(counts: np.ndarray, group: int) -> np.ndarray:
    """Per candidate [C, B] → [C]: the mean over disjoint groups of ``group`` probes of each group's largest
    count (the slowest of all when fewer than two groups fit); inf stays inf."""
    groups = counts.shape[1] // group if group > 0 else 0
    if groups < 2:
        return np.max(counts, axis=1)
    return np.mean(np.max(counts[:, :groups * group].reshape(counts.shape[0], groups, group), axis=2), axis=1)


def probe_iterations(executor: IdealExecutor, probe: PhaseProbe, candidates: np.ndarray, tolerance: float,
                     limit: int, patience: float = PATIENCE, per_sample: bool = False, group: int = 0
                     ) -> np.ndarray:
    """Iterations each candidate α [C, n] needs on the probe's states (inf: diverged or over ``limit``).

    With ``per_sample`` and ``group`` (at least two groups of probes), patience compares ``expected_slowest``:
    a candidate stops counting once a lower bound of its statistic (every probe's count so far) exceeds
    ``patience`` × the best final statistic of a settled candidate.
    """
    candidates = np.atleast_2d(np.asarray(candidates, dtype=float))
    count_candidates, samples = candidates.shape[0], probe.start.shape[0]
    counts = np.full(count_candidates, np.inf)
    last_exceeded = np.zeros((count_candidates, samples))
    active = np.arange(count_candidates)
    state = np.tile(probe.start, (count_candidates, 1))
    drive = np.tile(probe.drive, (count_candidates, 1))
    by_groups = per_sample and group > 0 and samples >= 2 * group
    best = np.inf
    saved_alpha = executor.alpha
    executor.alpha = np.repeat(candidates, samples, axis=0)
    try:
        iteration = 0
        while iteration < limit:
            iteration += 1
            updated = executor._apply(probe.compiled, state, drive)
            magnitude = np.abs(updated).max(axis=1)
            change = np.abs(updated - state).max(axis=1) / np.maximum(1.0, magnitude)
            change = change.reshape(active.size, samples)
            worst = change.max(axis=1)
            last_exceeded[active] = np.where(change > tolerance, iteration, last_exceeded[active])
            peak = magnitude.reshape(active.size, samples).max(axis=1)
            settled = worst <= tolerance
            if by_groups:
                counts[active[settled]] = iteration
                statistic = expected_slowest(last_exceeded[active] + 1.0, group)
                if np.any(settled):
                    best = min(best, float(np.min(statistic[settled])))
                # A candidate this much slower than the fastest settled one cannot be chosen: stop counting it.
                behind = statistic > patience * best + PATIENCE_SLACK
                counts[active[behind & ~settled]] = np.inf
                settled = settled | behind
            else:
                if np.any(settled) and not np.any(np.isfinite(counts)):
                    # A candidate this much slower than the fastest one cannot be chosen: stop counting it.
                    limit = min(limit, int(np.ceil(patience * iteration)) + PATIENCE_SLACK)
                counts[active[settled]] = iteration
            keep = ~settled & np.isfinite(worst) & (peak <= DIVERGENCE_BOUND)
            if not np.any(keep):
                break
            if not np.all(keep):  # the batch shrinks only when a candidate leaves it
                rows = np.repeat(keep, samples)
                active, state, drive = active[keep], updated[rows], drive[rows]
                executor.alpha = executor.alpha[rows]
            else:
                state = updated
    finally:
        executor.alpha = saved_alpha
    if per_sample:
        return np.where(np.isfinite(counts)[:, None], last_exceeded + 1.0, np.inf)
    return counts
