"""Local convergence certificates: contraction of a closed phase's loop over the box of states its samples visit.

Requires: a ``BlockProgram``, a closed ``Phase``, its α [n] and a box [low, high] of loop states (per channel)
recorded on seeded samples (``BoxRecorder``: the loop budget's own run, every iterate of every closed loop,
its start included). Guarantees:
- ``slope_sector`` gives, per channel, [a_j, b_j] ∋ σ'(z) for every z of the box widened by ``LOCAL_MARGIN`` of
  its width on each side: exact for the activations admc has (σ' even and non-increasing in |u|: tanh, the
  algebraic sigmoid; non-decreasing: relu), whose minimum over an interval is at an end and maximum at an end
  or at 0. The box is convex, so every difference quotient (σ(z) − σ(z')) / (z − z') of two of its points is a
  σ' of a point between them (mean value), in [a_j, b_j]; linear channels get [g, g]; every sector is then
  widened to at least ``SECTOR_FLOOR`` of its upper end (a wider sector is still a valid bound);
- ``local_certificate`` gives the smallest ρ the S-procedure SDP (``sdp_certificate`` with the sector
  [a, b]) certifies: for any two states z, z' of the widened box and any drive, ‖F(z) − F(z')‖_P ≤ ρ ‖z − z'‖_P
  (F the relaxed loop map). With ρ < 1 the error of an iteration that stays in the box (as the recorded ones
  do) to the fixed point shrinks by ρ per iteration; the certified iterations count from there, as the global
  certificates'. It says nothing of states outside the box (the global certificates do). Any global
  certificate holds over the box too, so the value reported is the smaller of the two (the search's own value
  is kept alongside, as the global certificates keep theirs).
"""

from __future__ import annotations

import numpy as np

from admc.ir.adm import activation_slope, is_activation
from admc.ir.program import BlockProgram, Phase
from admc.passes.convergence_certificates import iterations
from admc.passes.loop_jacobian import loop_matrix
from admc.passes.sdp_certificate import sdp_certificate
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
# Closed phases that get a local certificate (each is one SDP search: ~0.3-1 s at 66 channels): the phase whose
# calibration loop needed the most iterations (the first such on ties), deterministic and the one that matters
# for the loop budget.
LOCAL_PHASES = 1


class BoxRecorder(IdealExecutor):
    """An ideal run that also records, per closed phase (in order), the per-channel min and max over the samples
    of every state its loop visits (the start and every iterate): ``boxes`` is a list of (low [n], high [n])."""

    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []
        self._box: tuple[np.ndarray, np.ndarray] | None = None

    def _apply(self, compiled, state: np.ndarray, drive: np.ndarray) -> np.ndarray:
        updated = super()._apply(compiled, state, drive)
        if self._box is not None and updated.size:
            np.minimum(self._box[0], np.min(updated, axis=0), out=self._box[0])
            np.maximum(self._box[1], np.max(updated, axis=0), out=self._box[1])
        return updated

    def _closed(self, step, index, compiled, drive, state, result):
        self._box = (np.min(state, axis=0, initial=np.inf), np.max(state, axis=0, initial=-np.inf))
        try:
            return super()._closed(step, index, compiled, drive, state, result)
        finally:
            self.boxes.append(self._box)
            self._box = None


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
    """The local contraction over the box [low, high] widened by ``LOCAL_MARGIN``: the SDP's own value
    (``contraction_raw``, searched below max(1, ``global_bound``); None when it certifies nothing there), the
    smaller of it and the global bound (``contraction``), and the iterations that certifies."""
    slope_low, slope = slope_sector(program, *widen(low, high))
    certificate = sdp_certificate(loop_matrix(program, phase), alpha, slope, max(1.0, global_bound), slope_low)
    raw = None if certificate is None else certificate.rho
    rho = global_bound if raw is None else min(raw, global_bound)
    return {"contraction": rho, "contraction_raw": raw, "certified_iterations": iterations(rho, tolerance),
            "sector_width": float(np.mean(slope - slope_low))}
