"""The ``auto`` judge: candidate α vectors compared by the loop iterations they measurably need.

Requires: the probes of an ``IdealExecutor`` run (``alpha_probe.ProbeRecorder``) keyed by flat phase row, the
target's settle tolerance, and the spectral candidates of the α pass (u = 1 − α per channel: ``min``,
``global``, ``blockwise`` or the channel-wise ``auto``). Guarantees: ``candidates`` adds the single α grid
0, 0.05, …, 0.95 (each clipped into the channel's bounds, so with a gain range it is floored by ``min``
exactly as a grid search would be) and geometric blends of the best spectral candidate with ``min`` and with
``global``; every candidate lies within [lower, upper], so every hardware limit holds and the fixed points are
unchanged (0 ≤ α < 1, Eq. 10). ``choose`` returns the candidate with the fewest probe iterations summed over
the phases that share it (ties: the smaller noise gain, then the order given, spectral candidates first), a
phase's count being the expected slowest of ``GROUP`` probes (``expected_slowest``: the statistic the loop
budget and the benchmark measure, estimated without the noise of one slowest probe); the winner's finer
neighbours (the single α ± 0.01 … 0.04, a blend's weight ± 1/16, 1/8) are added (to ``candidates`` too) and
judged on the same probes where that fits ``TOTAL_WORK``; then, given the state groups (``groups``), a
coordinate search moves one group at a time to a grid α (``group_moves``: screened, shortlisted and judged
like the first rounds) while a move saves at least one iteration per phase, up to ``COORDINATE_ROUNDS``
moves. On a target with read noise the ranking is by iterations × noise gain (``choose``). So ``auto`` is
never measured worse than ``min``, ``global`` or any grid point on the probes; ``min`` is kept unless the
best saves more than one iteration per phase and ``MARGIN`` of the count (the probes' resolution). The work
is bounded: probes and candidates shrink on large programs (``PROBE_WORK`` multiply-adds per loop
iteration), and a candidate that falls behind the fastest stops being counted (its total becomes inf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.passes.alpha_probe import PhaseProbe, expected_slowest, probe_iterations
from admc.passes.alpha_problem import noise_gain
from admc.runtime.executor import IdealExecutor

GRID = np.round(np.arange(0.0, 0.951, 0.05), 2)
BLENDS = (0.25, 0.5, 0.75)
# Multiply-adds per probe loop iteration, all candidates and probes together (about 10 ms of numpy).
PROBE_WORK = 4_000_000
SCREEN_SAMPLES = 16
TOTAL_WORK = 2_000_000_000  # multiply-adds of the final round (about a second of numpy)
SCREEN_PATIENCE = 1.5  # candidates this much slower than the fastest in a phase stop counting (inf)
SHORTLIST = 6
MARGIN = 0.02  # relative saving below which min is kept (and at least one iteration per phase)
PROBE_LIMIT = 20_000
# A loop's count is its slowest sample's: the loop budget and the benchmark measure it on 32 samples, and the
# slowest of 256 probes is a different (and noisier) statistic. With enough probes the judge ranks by the mean
# over disjoint groups of this size of each group's slowest count: an unbiased estimate of the expected count
# on 32 fresh samples, its noise averaged over the groups.
GROUP = 32
FINE_STEP = 0.01  # the single-α grid is refined to this spacing around its best point
# Group coordinate search: at large steps the best α often damps one layer and not the others; on the benchmark
# networks at T = 2 and 4 the best block-wise α per phase needs about 10 % fewer iterations than the best single
# α (in-sample, docs/alpha-selection.md), which no single α and no blend of the spectral candidates expresses.
COORDINATE_ROUNDS = 3
COORDINATE_SCREEN = 8  # fewest screening probes for which the search is worth its cost


def blend(base: np.ndarray, other: np.ndarray, weight: float, lower: np.ndarray, upper: np.ndarray
          ) -> np.ndarray:
    """Geometric blend of two u vectors, clipped into the bounds."""
    return np.clip(np.exp(weight * np.log(base) + (1.0 - weight) * np.log(np.maximum(other, 1e-12))), lower, upper)


@dataclass
class Judge:
    executor: IdealExecutor
    probes: dict[int, PhaseProbe]
    tolerance: float
    groups: list[slice] = field(default_factory=list)  # channels of each state group (coordinate search)
    measured: dict[str, float] = field(default_factory=dict)  # probe iterations of min and of the choice
    # Set by ``candidates``: the bounds, and what each blend is made of (for the refinement round).
    _bounds: tuple[np.ndarray, np.ndarray] | None = None
    _blends: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)

    def candidates(self, options: dict[str, np.ndarray], best: str, lower: np.ndarray, upper: np.ndarray
                   ) -> dict[str, np.ndarray]:
        """The spectral candidates, then blends, then the α grid, without duplicates."""
        self._bounds, self._blends = (lower, upper), {}
        result = dict(options)
        base = np.clip(options[best], lower, upper)
        for other in ("min", "global"):
            for weight in BLENDS:
                if other != best and other in options:
                    name = f"{best}~{other} {weight:g}"
                    result[name] = blend(base, options[other], weight, lower, upper)
                    self._blends[name] = (base, options[other], weight)
        for value in GRID:
            result[f"α={value:g}"] = np.clip(np.full(lower.size, 1.0 - value), lower, upper)
        unique: dict[str, np.ndarray] = {}
        for name, u in result.items():
            if name in options or not any(np.array_equal(u, seen) for seen in unique.values()):
                unique[name] = u
        return unique

    def neighbours(self, name: str, seen: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Finer candidates around a winner: the single α ± 0.01 … 0.04, or a blend's weight ± 1/16, ± 1/8."""
        if self._bounds is None:
            return {}
        lower, upper = self._bounds
        result = {}
        if name.startswith("α="):
            value = float(name[2:])
            for offset in (-4, -3, -2, -1, 1, 2, 3, 4):
                fine = round(value + offset * FINE_STEP, 2)
                if 0.0 <= fine < 1.0:
                    result[f"α={fine:g}"] = np.clip(np.full(lower.size, 1.0 - fine), lower, upper)
        elif name in self._blends:
            base, other, weight = self._blends[name]
            for offset in (-0.125, -0.0625, 0.0625, 0.125):
                if 0.0 < weight + offset < 1.0:
                    stem = name.rsplit(" ", 1)[0]
                    result[f"{stem} {weight + offset:g}"] = blend(base, other, weight + offset, lower, upper)
        return {key: u for key, u in result.items() if not any(np.array_equal(u, other) for other in seen)}

    def group_moves(self, name: str, u: np.ndarray, seen: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``u`` with one state group set to a grid α (clipped into the bounds), for every group and grid point."""
        if self._bounds is None or len(self.groups) < 2:
            return {}
        lower, upper = self._bounds
        result: dict[str, np.ndarray] = {}
        for index, part in enumerate(self.groups):
            for value in GRID:
                moved = u.copy()
                moved[part] = 1.0 - value
                moved = np.clip(moved, lower, upper)
                if not any(np.array_equal(moved, other) for other in [*seen, *result.values()]):
                    result[f"{name}, group {index} α={value:g}"] = moved
        return result

    def _coordinate_search(self, rows: list[int], candidates: dict[str, np.ndarray], names: list[str],
                           table: np.ndarray, totals: np.ndarray, samples: int, patience: float
                           ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Moves of one group at a time from the current best, while one saves an iteration per phase."""
        work = self._work(rows)
        # The bound on the moves of one round (before any is built: on large programs the search never runs).
        most = len(self.groups) * GRID.size
        screen = int(min(PROBE_WORK // (work * max(most, 1)), SCREEN_SAMPLES, samples))
        for _ in range(COORDINATE_ROUNDS):
            best = int(np.argmin(totals))
            if (not np.isfinite(totals[best]) or screen < COORDINATE_SCREEN
                    or work * (most * screen + SHORTLIST * samples) * totals[best] > TOTAL_WORK):
                break
            moves = self.group_moves(names[best], table[best], list(table))
            if not moves:
                break
            move_names, batch = list(moves), np.stack(list(moves.values()))
            first = self._totals(rows, batch, screen, SCREEN_PATIENCE)
            keep = [index for index in np.argsort(first, kind="stable")[:SHORTLIST] if np.isfinite(first[index])]
            if not keep:
                break
            judged = self._totals(rows, batch[keep], samples, patience)
            kept_names = [move_names[index] for index in keep]
            candidates.update({name: moves[name] for name in kept_names})
            names, table = names + kept_names, np.vstack([table, batch[keep]])
            totals = np.concatenate([totals, judged])
            if np.min(judged) > totals[best] - len(rows):
                break
        return names, table, totals

    def _work(self, rows: list[int]) -> int:
        """Multiply-adds of one loop iteration of one probe (the largest phase of ``rows``)."""
        return max(max(sum(matrix.size for _, _, matrix in self.probes[row].compiled.blocks)
                       + self.probes[row].start.shape[1] for row in rows), 1)

    def _totals(self, rows: list[int], table: np.ndarray, samples: int, patience: float) -> np.ndarray:
        totals = np.zeros(len(table))
        for row in rows:
            probe = self.probes[row]
            probe = PhaseProbe(probe.compiled, probe.start[:samples], probe.drive[:samples], probe.fixed_point)
            totals += expected_slowest(probe_iterations(self.executor, probe, 1.0 - table, self.tolerance,
                                                        PROBE_LIMIT, patience, per_sample=True, group=GROUP),
                                       GROUP)
        return totals

    def choose(self, rows: list[int], candidates: dict[str, np.ndarray], best: str, noise_model: str,
               noisy: bool = False) -> str:
        """The fewest probe iterations (on a ``noisy`` target: the least iterations × noise gain); ``best`` (the
        spectral choice) when no candidate settles.

        Three rounds: every candidate on ``SCREEN_SAMPLES`` probes; the ``SHORTLIST`` fastest (with ``min`` and
        ``best``) on every probe the work bound allows, ranked by the expected slowest count of ``GROUP``
        samples; then the winner's finer neighbours (``neighbours``) and group moves on the same probes.

        Why the product on a target with read noise: the readout's noise variance is the noise gain times the
        detector's, and averaging repeats (or a longer window) divides it by the time spent, so iterations ×
        noise gain is the time a candidate needs for a given readout accuracy. A candidate with a larger α
        settles in fewer iterations but reads noisier; it wins only where it is the faster way to that accuracy.
        """
        names = list(candidates)
        work = self._work(rows)
        recorded = min(self.probes[row].start.shape[0] for row in rows)
        screen = int(np.clip(PROBE_WORK // (work * len(names)), 1, min(SCREEN_SAMPLES, recorded)))
        names = names[:int(np.clip(PROBE_WORK // (work * screen), 3, len(names)))]
        table = np.stack([candidates[name] for name in names])
        first = self._totals(rows, table, screen, SCREEN_PATIENCE)
        ranked = sorted(range(len(names)), key=lambda index: (first[index], index))
        keep = sorted(set(ranked[:SHORTLIST]) | {names.index(name) for name in ("min", best) if name in names})
        # The final round's probes also fit a total budget: the screen's fastest count says how long it runs.
        fastest = float(first[ranked[0]]) if np.isfinite(first[ranked[0]]) else PROBE_LIMIT * len(rows)
        samples = int(np.clip(min(PROBE_WORK // (work * len(keep)),
                                  TOTAL_WORK // (work * len(keep) * max(fastest, 1.0))), screen, recorded))
        names, table = [names[index] for index in keep], table[keep]
        # A candidate behind by more than the margin in a phase judged alone cannot win (patience compares the
        # statistic ranked by: see ``probe_iterations``); phases judged together may make up for each other.
        patience = 1.0 + MARGIN if len(rows) == 1 else SCREEN_PATIENCE
        totals = self._totals(rows, table, samples, patience)
        winner = int(np.argmin(totals))
        finer = self.neighbours(names[winner], list(table)) if np.isfinite(totals[winner]) else {}
        # The refinement costs about the final round again: only within the same total work bound.
        if finer and work * (len(finer) + 1) * samples * totals[winner] <= TOTAL_WORK:
            candidates.update(finer)  # the caller reads the chosen vector from ``candidates``
            batch = np.vstack([table[winner], *finer.values()])
            refined = self._totals(rows, batch, samples, patience)
            names, table = names + list(finer), np.vstack([table, batch[1:]])
            totals = np.concatenate([totals, refined[1:]])
        if self.groups:
            names, table, totals = self._coordinate_search(rows, candidates, names, table, totals, samples,
                                                           patience)
        noise = np.array([float(np.mean(noise_gain(np.clip(u, 1e-12, 1.0), noise_model))) for u in table])
        score = totals * noise if noisy else totals
        order = sorted(range(len(names)), key=lambda index: (score[index], totals[index], noise[index], index))
        if "min" in names:
            # A saving within the probes' resolution is not worth leaving min (the smallest α: least noise
            # after the skip, and the choice every other figure was measured with): ±1 iteration per phase.
            reference = totals[names.index("min")]
            if reference <= totals[order[0]] + max(len(rows), MARGIN * totals[order[0]]):
                order.insert(0, names.index("min"))
        if "min" in names:
            self.measured["min"] = self.measured.get("min", 0.0) + float(totals[names.index("min")])
        if not np.isfinite(totals[order[0]]):
            return best
        self.measured["chosen"] = self.measured.get("chosen", 0.0) + float(totals[order[0]])
        return names[order[0]]
