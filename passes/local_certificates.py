"""Local convergence certificates: contraction of a closed phase's loop over the boxes of states its samples visit.

Requires: a ``BlockProgram``, a closed ``Phase``, its α [n] and, per tail start k (``TAIL_STARTS``) and per
seeded sample, a box [low, high] of the loop states that sample visits from iteration k on (``BoxRecorder``: the
loop budget's own run, every iterate of every closed loop, its start as iteration 0). Guarantees:
- ``slope_sector`` gives, per channel, [a_j, b_j] ∋ σ'(z) for every z of the box widened by ``LOCAL_MARGIN`` of
  its width on each side: exact for the activations admc has (σ' even and non-increasing in |u|: tanh, the
  algebraic sigmoid; non-decreasing: relu), whose minimum over an interval is at an end and maximum at an end
  or at 0. The box is convex, so every difference quotient (σ(z) − σ(z')) / (z − z') of two of its points is a
  σ' of a point between them (mean value), in [a_j, b_j]; linear channels get [g, g]; every sector is then
  widened to at least ``SECTOR_FLOOR`` of its upper end (a wider sector is still a valid bound);
- ``local_certificate`` gives, for the first k whose boxes all certify one ρ < 1, that ρ: for each sample, a
  full P_s (``sample_certificates``, checked densely) such that for any two states z, z' of that sample's
  widened box and any drive ‖F(z) − F(z')‖_{P_s} ≤ ρ ‖z − z'‖_{P_s} (F the relaxed loop map). The recorded
  iterations from k on stay in their boxes, so from iteration k each sample's error to its fixed point shrinks by
  ρ per iteration; the certified iterations are k plus those at ρ. It says nothing of other states (the global
  certificates do). Any global certificate holds over the boxes too, so the value reported is the smaller of
  the two (the search's own value is kept alongside).

Why per sample, and a full P: one box over all samples holds, channel by channel, slopes whose loop matrices
have spectral radius above 1 (two moons at T = 4: 1.03 on aoc-48, 1.10 on ideal), so no norm certifies it
below 1; and a diagonal P cannot follow the block cycle's non-normality (1.28 where ρ(J) ≤ 0.83).
"""

from __future__ import annotations

import numpy as np

from admc.ir.adm import activation_slope, is_activation
from admc.ir.program import BlockProgram, Phase
from admc.passes.convergence_certificates import SDP_LIMIT, iterations
from admc.passes.loop_jacobian import loop_matrix
from admc.passes.sample_certificates import boxes_certificate
from admc.runtime.executor import IdealExecutor

# Each channel's visited interval [low, high] is widened by this fraction of its width on both sides before σ'
# is bounded over it: the certificate then covers states a little beyond the recorded ones (fresh samples, the
# realised program's rounding), at the price of wider sectors (on two moons at T = 4, 2 % and 10 % certify
# within 0.01 of each other).
LOCAL_MARGIN = 0.02
# Every sector is at least this fraction of its upper end wide: with a_j = b_j (a linear channel, or a tanh
# channel that barely moves) the S-procedure's multiplier λ_j is optimal at infinity and the barrier search
# stalls (two moons: no certificate at all below 1.5 on per-sample boxes; tiny builds: none below the global).
SECTOR_FLOOR = 0.05
# The tails certified, first to last until one certifies ρ < 1: the boxes of the states each loop visits from
# iteration k on (0: the whole loop, its start included). The early iterations sweep the widest slopes: on two
# moons at T = 4 (ideal) one sample's whole box holds slopes whose loop matrix has spectral radius 1.006.
TAIL_STARTS = (0, 8, 16, 32, 64, 128)
# Closed phases that get a local certificate (each is 32 full-P searches: ~0.3-0.5 s at 66 channels): the phase whose
# calibration loop needed the most iterations (the first such on ties), deterministic and the one that matters
# for the loop budget.
LOCAL_PHASES = 1


class BoxRecorder(IdealExecutor):
    """An ideal run that also records, per closed phase (in order), per sample, the per-channel min and max of
    every state its loop visits from iteration k on, for each k of ``TAIL_STARTS`` (iteration 0 is the start):
    ``boxes`` is a list of (low, high), each [len(TAIL_STARTS), samples, n] (a box that no iteration reached is
    empty: low = +inf > high), for the closed loop that needed the most iterations (the first on ties) and
    (None, None) for the others. Above ``SDP_LIMIT`` channels (where no local certificate runs) every entry is
    (None, None)."""

    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.boxes: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        self._box: tuple[np.ndarray, np.ndarray] | None = None
        self._count = 0
        self._kept: tuple[int, int] | None = None  # (position in ``boxes``, iterations) of the slowest loop

    def _apply(self, compiled, state: np.ndarray, drive: np.ndarray) -> np.ndarray:
        updated = super()._apply(compiled, state, drive)
        if self._box is not None:
            self._count += 1
            self._extend(updated)
        return updated

    def _extend(self, states: np.ndarray) -> None:
        for position, start in enumerate(TAIL_STARTS):
            if self._count >= start:
                np.minimum(self._box[0][position], states, out=self._box[0][position])
                np.maximum(self._box[1][position], states, out=self._box[1][position])

    def _closed(self, step, index, compiled, drive, state, result):
        if self.program.size > SDP_LIMIT:
            self.boxes.append((None, None))
            return super()._closed(step, index, compiled, drive, state, result)
        shape = (len(TAIL_STARTS), *state.shape)
        self._box, self._count = (np.full(shape, np.inf), np.full(shape, -np.inf)), 0
        self._extend(state)
        try:
            return super()._closed(step, index, compiled, drive, state, result)
        finally:
            self._keep(self._box, self._count)
            self._box = None

    def _keep(self, box: tuple[np.ndarray, np.ndarray], count: int) -> None:
        """Keep the boxes of the slowest closed loop so far (the first on ties: the phase ``LOCAL_PHASES`` = 1
        certifies), (None, None) for the others: a build of many steps would otherwise hold them all."""
        if self._kept is None or count > self._kept[1]:
            if self._kept is not None:
                self.boxes[self._kept[0]] = (None, None)
            self._kept = (len(self.boxes), count)
            self.boxes.append(box)
        else:
            self.boxes.append((None, None))


def widen(low: np.ndarray, high: np.ndarray, margin: float = LOCAL_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """The box widened by ``margin`` × its width on each side, per channel."""
    width = high - low
    return low - margin * width, high + margin * width


def slope_sector(program: BlockProgram, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[a, b] per channel: the min and max of σ' (``loop_jacobian.slopes``' convention, gain included) over
    [low, high]; [g, g] on linear channels, [0, 0] on unread ones; a lowered to (1 − ``SECTOR_FLOOR``) b."""
    lower, upper = np.zeros(program.size), np.zeros(program.size)
    for group in program.groups:
        channels, gain = slice(group.offset, group.stop), group.sigma_gain
        if is_activation(group.activation):
            start, stop = gain * low[channels], gain * high[channels]
            ends = np.stack([activation_slope(group.activation, start), activation_slope(group.activation, stop)])
            peak = float(activation_slope(group.activation, np.zeros(1))[0])
            inside = (start <= 0.0) & (stop >= 0.0)
            lower[channels] = gain * np.min(ends, axis=0)
            upper[channels] = gain * np.where(inside, np.maximum(peak, np.max(ends, axis=0)), np.max(ends, axis=0))
        elif group.activation == "identity":
            lower[channels] = upper[channels] = gain
    return np.minimum(lower, (1.0 - SECTOR_FLOOR) * upper), upper


def local_certificate(program: BlockProgram, phase: Phase, alpha: np.ndarray, low: np.ndarray,
                      high: np.ndarray, tolerance: float, global_bound: float) -> dict:
    """The local contraction over each sample's box (``BoxRecorder``'s [starts, samples, n]) widened by
    ``LOCAL_MARGIN``, in a full weighted norm per sample (``sample_certificates``): from the first k of
    ``TAIL_STARTS`` whose boxes certify one ρ < 1 (``from_iteration``; ``contraction_raw`` None when none does),
    the smaller of it and the global bound (``contraction``), and the iterations that certifies (k + the
    iterations at ρ from there)."""
    if low is None or high is None:
        raise ValueError("no boxes recorded for this phase (BoxRecorder keeps the slowest closed loop's only)")
    loop = loop_matrix(program, phase).toarray()
    for position, start in enumerate(TAIL_STARTS):
        if not np.all(low[position] <= high[position]):
            break  # the loops settled before iteration k: no box from there
        sectors = [slope_sector(program, *widen(low[position, sample], high[position, sample]))
                   for sample in range(low.shape[1])]
        found = boxes_certificate(loop, alpha, sectors, 1.0)
        if found is not None and found[0] < 1.0:
            rho = min(found[0], global_bound)
            count = iterations(rho, tolerance)
            return {"contraction": rho, "contraction_raw": found[0], "from_iteration": start,
                    "certified_iterations": None if count is None else start + count, "boxes": len(sectors),
                    "sector_width": _width(sectors)}
    return {"contraction": global_bound, "contraction_raw": None, "from_iteration": None,
            "certified_iterations": iterations(global_bound, tolerance), "boxes": int(low.shape[1]),
            "sector_width": _width([slope_sector(program, *widen(low[0, sample], high[0, sample]))
                                    for sample in range(low.shape[1])])}


def _width(sectors: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The mean over samples and channels of the sector's width b − a (how much of σ' the boxes leave open)."""
    return float(np.mean([np.mean(upper - lower) for lower, upper in sectors]))
