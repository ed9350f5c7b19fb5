"""The AOC's optical chain in the machine's own units (calibrations/FIELDS.md §1-2), nominal and measured.

On the machine a detector's loop term is not β·T·σ but, per output port p (one module of N ports),
  g_p = κ_p [ (s_p/N) (η⁺_p Σ_q w̃⁺_pq ρ⁺_q P⁺(S(z_q)) − η⁻_p Σ_q w̃⁻_pq ρ⁻_q P⁻(S(z_q))) + r (δ_p + s_p λ_p) ]
with s_p the machine's gain setting (the makers' ``beta``), S the measured sigmoid, P± each path's LED cubic,
ρ± the fan-in efficiency, w̃± the SLM transfer of each column (darkness c included), η± the output gain,
κ, δ, λ, r the closed-loop correction; PBS leakage and photodiode crosstalk act between η and the gain.

Requires: numpy arrays or torch tensors as documented per function; a ``Calibration`` for the measured chain.
Guarantees:
  * :class:`ChainSpec` (the preset's nominal figures) gives the normalised gain per unit setting
    G = d·C̄·FS·ρ̄·η̄·κ̄ / N, so the compiler's normalised β equals G·s: docs/design.md's identities hold for
    β = G·s, T = the normalised transmission and σ = the program's tanh of the fixed input gain a.
  * :func:`path_matrices` folds everything between the LED light and the gain into two matrices per module
    (the coefficients of l⁺ and of l⁻ on y⁺ − y⁻) plus a constant; every step is affine in the light, so
    ``loop_term`` built from them equals the chain evaluated step by step. Every measured effect is switched
    by the twin's non-idealities; switched off it takes its nominal (mean) value, so with everything off the
    chain is exactly G·s·(T⁺ − T⁻)·(d·C̄·σ)/(d·C̄) — the ideal program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from admc.targets.aoc.calibration import DEAD_EFFICIENCY, Calibration
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.slm import realised_weight

if TYPE_CHECKING:  # the functions on tensors are called by torch code; loading the module needs no torch
    import torch

# The 16-variable machine's hard-coded values (calibrations/FIELDS.md §2): output gains, PBS polynomial normalisations.
OUTPUT_GAIN_16 = (0.65, 1.0)
PBS_16_NORMALISATION = {"positive_to_negative": 0.06, "negative_to_positive": 0.04}


@dataclass(frozen=True)
class ChainSpec:
    """Nominal chain figures of a target (its preset cites each). Defaults: a unit chain (G = 1)."""

    sigmoid: tuple[float, ...] = (1.0, 0.0, 2.0, 1.0, 0.0, 0.0)  # [a, b, c, d, f, g] of S(z)
    led_positive: tuple[float, ...] = (0.0, 0.0, 1.0, 0.0)  # cubic, descending powers
    led_negative: tuple[float, ...] = (0.0, 0.0, 1.0, 0.0)
    slm_full_scale: float = 1.0  # mean a + b of the column transfers
    input_efficiency: float = 1.0  # mean ρ over live sources
    output_gain: float = 1.0  # mean η
    loop_gain: float = 1.0  # mean κ
    gain_divisor: float = 1.0  # N of the makers' s/N

    @property
    def input_gain(self) -> float:
        """The sigmoid's fixed input gain a (V⁻¹)."""
        return float(self.sigmoid[0])

    @property
    def led_slope(self) -> float:
        """Nominal LED slope: the mean of both paths' linear coefficients."""
        return 0.5 * (float(self.led_positive[2]) + float(self.led_negative[2]))

    @property
    def light_per_sigma(self) -> float:
        """LED light per unit of the normalised σ: d·C̄."""
        return float(self.sigmoid[3]) * self.led_slope

    @property
    def path_gain(self) -> float:
        """Nominal optics from light to detector: FS·ρ̄·η̄ (the normalised transmission's unit)."""
        return self.slm_full_scale * self.input_efficiency * self.output_gain

    @property
    def gain_per_setting(self) -> float:
        """G: normalised β per unit of the machine's gain setting."""
        return self.light_per_sigma * self.path_gain * self.loop_gain / self.gain_divisor


@dataclass(frozen=True)
class MeasuredChain:
    """A calibration's per-port figures for a module of ``ports`` ports (means where the sizes differ, as the
    makers' loader does). Arrays are numpy float64; absent effects are neutral (κ = 1, offsets 0)."""

    ports: int
    native: bool
    sigmoid: np.ndarray  # (6,)
    led: dict[str, np.ndarray]  # path -> (4,)
    efficiency: dict[str, np.ndarray]  # path -> (P,)
    transfer: dict[str, np.ndarray]  # path -> (P, 3) rows [a, b, c]
    output_gain: dict[str, np.ndarray]  # path -> (P,)
    to_earlier: dict[str, np.ndarray]
    to_later: dict[str, np.ndarray]
    pbs_leak: dict[str, np.ndarray] | None  # 48-variable: path -> (P,), leak into the same path
    pbs_polynomial: dict[str, np.ndarray] | None  # 16-variable, native size only: path -> (P-1, 3)
    kappa: np.ndarray
    dc_offset: np.ndarray
    linear_offset: np.ndarray
    adc_ratio: float

    @property
    def dead_input_ports(self) -> list[int]:
        both = np.minimum(self.efficiency["positive"], self.efficiency["negative"])
        return [int(port) for port in np.flatnonzero(both < DEAD_EFFICIENCY)]

    @property
    def dead_output_ports(self) -> list[int]:
        gain = np.minimum(self.output_gain["positive"], self.output_gain["negative"])
        full = np.minimum(self.transfer["positive"][:, :2].sum(axis=1), self.transfer["negative"][:, :2].sum(axis=1))
        return [int(port) for port in np.flatnonzero((gain < DEAD_EFFICIENCY) | (full < DEAD_EFFICIENCY)
                                                     | (self.kappa < DEAD_EFFICIENCY))]


def measured_chain(calibration: Calibration, ports: int) -> MeasuredChain:
    """The calibration's figures on a module of ``ports`` ports."""
    native = calibration.channels == ports

    def per_port(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values.copy() if native else np.full(ports, values.mean())

    def per_port_rows(values: np.ndarray) -> np.ndarray:
        return values.copy() if native else np.tile(values.mean(axis=0), (ports, 1))

    cal = calibration
    if cal.output_correction_positive is not None:
        output_gain = {"positive": per_port(cal.output_correction_positive),
                       "negative": per_port(cal.output_correction_negative)}
    else:
        output_gain = {"positive": np.full(ports, OUTPUT_GAIN_16[0]), "negative": np.full(ports, OUTPUT_GAIN_16[1])}
    pbs_leak = None
    if cal.pbs_negative_to_positive is not None:
        # calibrations/FIELDS.md: the positive path pairs with the negative_to_positive list.
        pbs_leak = {"positive": per_port(cal.pbs_negative_to_positive),
                    "negative": per_port(cal.pbs_positive_to_negative)}
    pbs_polynomial = None
    if cal.pbs_polynomial_positive is not None and native:  # the makers skip it for other sizes
        pbs_polynomial = {"positive": cal.pbs_polynomial_positive.copy(),
                          "negative": cal.pbs_polynomial_negative.copy()}
    closed = cal.closed_loop_scaling is not None
    return MeasuredChain(
        ports=ports, native=native, sigmoid=cal.sigmoid_coefficients.copy(),
        led={"positive": cal.led_positive.copy(), "negative": cal.led_negative.copy()},
        efficiency={"positive": per_port(cal.row_profiles_positive), "negative": per_port(cal.row_profiles_negative)},
        transfer={"positive": per_port_rows(cal.distortion_positive),
                  "negative": per_port_rows(cal.distortion_negative)},
        output_gain=output_gain,
        to_earlier={"positive": per_port(cal.ratio_to_earlier_positive),
                    "negative": per_port(cal.ratio_to_earlier_negative)},
        to_later={"positive": per_port(cal.ratio_to_later_positive), "negative": per_port(cal.ratio_to_later_negative)},
        pbs_leak=pbs_leak, pbs_polynomial=pbs_polynomial,
        kappa=per_port(cal.closed_loop_scaling) if closed else np.ones(ports),
        dc_offset=per_port(cal.closed_loop_dc_offset) if closed else np.zeros(ports),
        linear_offset=per_port(cal.closed_loop_linear_offset) if closed else np.zeros(ports),
        adc_ratio=float(cal.solution_to_adc_ratio) if closed else 0.0,
    )


# -------------------------------------------------------------------------------------------- light


def sigmoid_output(z: torch.Tensor, chain: MeasuredChain, nonidealities: NonIdealities) -> torch.Tensor:
    """t = S(z) = d·s(a z + b) + f + g z with s the algebraic sigmoid of exponent c (tanh when the
    nonlinearity is off); b, f, g are zero unless ``sigmoid_offsets`` is on. a is the machine's, fixed."""
    a, b, c, d, f, g = (float(value) for value in chain.sigmoid)
    offsets = nonidealities.sigmoid_offsets.enabled
    argument = a * z + b if offsets else a * z
    if nonidealities.nonlinearity.enabled:
        shaped = argument / (1.0 + argument.abs() ** c) ** (1.0 / c)
    else:
        shaped = argument.tanh()
    result = d * shaped
    if offsets:
        result = result + f + g * z
    return result


def led_light(t: torch.Tensor, chain: MeasuredChain, nominal: ChainSpec, nonidealities: NonIdealities
              ) -> dict[str, torch.Tensor]:
    """Light of each path for drive t: the path's cubic (``led_response`` on) or C̄·t."""
    if not nonidealities.led_response.enabled:
        light = nominal.led_slope * t
        return {"positive": light, "negative": light}
    result = {}
    for path in ("positive", "negative"):
        cubic, square, linear, constant = (float(value) for value in chain.led[path])
        result[path] = ((cubic * t + square) * t + linear) * t + constant
    return result


# ------------------------------------------------------------------------------------------- optics


def _crosstalk_matrix(to_earlier: np.ndarray, to_later: np.ndarray) -> np.ndarray:
    """X with y ← X y: y_j + E_{j+1} y_{j+1} + L_{j−1} y_{j−1}."""
    ports = to_earlier.size
    matrix = np.eye(ports)
    matrix[np.arange(ports - 1), np.arange(1, ports)] = to_earlier[1:]
    matrix[np.arange(1, ports), np.arange(ports - 1)] = to_later[:-1]
    return matrix


@dataclass(frozen=True)
class PathMatrices:
    """Per module, before the gain: y⁺ − y⁻ = positive @ l⁺ + negative @ l⁻ + constant.

    ``positive``, ``negative``: [M, P_out, P_in] (light indexed by input port); ``constant``: [M, P_out]."""

    positive: np.ndarray
    negative: np.ndarray
    constant: np.ndarray


def path_matrices(drive: dict[str, np.ndarray], responses: dict[str, Sequence[float]], chain: MeasuredChain,
                  nominal: ChainSpec, nonidealities: NonIdealities) -> PathMatrices:
    """Fold fan-in, SLM transfer, darkness, η, PBS leakage and PD crosstalk of every module (calibrations/FIELDS.md §1).

    ``drive``: the SLM drive u in [0, 1] per path, [M, P_out, P_in]; ``responses``: the target's nominal
    response per path (used when ``slm_transfer`` is off: FS·w(u), w the darkness-free normalised
    transmission of ``slm.realised_weight``). Order as the
    makers': η, then on the 48-port format PBS then PD crosstalk, on the 16-port format PD crosstalk then PBS.
    """
    effects = nonidealities
    ports = chain.ports
    efficiency = {path: chain.efficiency[path] if effects.input_efficiency.enabled
                  else np.full(ports, nominal.input_efficiency) for path in ("positive", "negative")}
    gain = {path: chain.output_gain[path] if effects.output_gain.enabled
            else np.full(ports, nominal.output_gain) for path in ("positive", "negative")}
    rows = _same_path_rows(drive, responses, chain, nominal, effects, efficiency, gain)
    constant = {path: np.zeros(rows[(path, path)].shape[:2]) for path in ("positive", "negative")}
    modules = rows[("positive", "positive")].shape[0]
    for output, light in (("positive", "negative"), ("negative", "positive")):
        rows[(output, light)] = np.zeros((modules, ports, ports))
    if chain.pbs_polynomial is None:
        _add_pbs_leakage(rows, drive, chain, effects, efficiency, gain)
        _add_pd_crosstalk(rows, constant, chain, effects)
    else:
        _add_pd_crosstalk(rows, constant, chain, effects)
        _add_pbs_leakage(rows, drive, chain, effects, efficiency, gain)
    return PathMatrices(
        positive=rows[("positive", "positive")] - rows[("negative", "positive")],
        negative=rows[("positive", "negative")] - rows[("negative", "negative")],
        constant=constant["positive"] - constant["negative"],
    )


def _same_path_rows(drive: dict[str, np.ndarray], responses: dict[str, Sequence[float]], chain: MeasuredChain,
                    nominal: ChainSpec, effects: NonIdealities, efficiency: dict[str, np.ndarray],
                    gain: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """(path, path) → [M, P, P]: each path's light through its own SLM transfer (darkness included) and η."""
    rows = {}
    for path in ("positive", "negative"):
        a, b, c = (chain.transfer[path][:, index][None, :, None] for index in range(3))
        if effects.slm_transfer.enabled:
            u = drive[path]
            transmitted = a * u * u + b * u
        else:
            transmitted = nominal.slm_full_scale * realised_weight(drive[path], responses[path])
        if effects.slm_darkness.enabled:
            transmitted = transmitted + c
        rows[(path, path)] = gain[path][None, :, None] * transmitted * efficiency[path][None, None, :]
    return rows


def _add_pd_crosstalk(rows: dict[tuple[str, str], np.ndarray], constant: dict[str, np.ndarray],
                      chain: MeasuredChain, effects: NonIdealities) -> None:
    """Photodiode neighbour spill on every (output path, light path) row, in place; on the calibrated size the
    makers subtract the column's darkness c before the spill (calibrations/FIELDS.md §2)."""
    if not effects.pd_crosstalk.enabled:
        return
    for path in ("positive", "negative"):
        matrix = _crosstalk_matrix(chain.to_earlier[path], chain.to_later[path])
        for light in ("positive", "negative"):
            rows[(path, light)] = np.einsum("pk,mkq->mpq", matrix, rows[(path, light)])
        if effects.slm_darkness.enabled and chain.native:
            darkness = chain.transfer[path][:, 2]
            spill = (matrix - np.eye(chain.ports)) @ darkness
            constant[path] = constant[path] - spill[None, :]


def _add_pbs_leakage(rows: dict[tuple[str, str], np.ndarray], drive: dict[str, np.ndarray], chain: MeasuredChain,
                     effects: NonIdealities, efficiency: dict[str, np.ndarray], gain: dict[str, np.ndarray]) -> None:
    """PBS leakage, in place: the 48-port format's index-aligned leak, or the 16-port format's polynomial."""
    if not effects.pbs_crosstalk.enabled:
        return
    if chain.pbs_leak is not None:
        diagonal = np.arange(chain.ports)
        for path in ("positive", "negative"):
            leak = chain.pbs_leak[path] * gain[path] * efficiency[path]
            rows[(path, path)][:, diagonal, diagonal] += leak[None, :]
    elif chain.pbs_polynomial is not None:
        _pbs_16(rows, drive, chain, efficiency)


def _pbs_16(rows: dict, drive: dict[str, np.ndarray], chain: MeasuredChain, efficiency: dict) -> None:
    """16-port format: detector j ≥ 1 receives the other path's light through weight column k = P − j with
    coefficient row r = P − 1 − j, √2 (A r-row quadratic of the undistorted weight) / normalisation."""
    ports = chain.ports
    detectors = np.arange(1, ports)
    columns = ports - detectors
    coefficient_rows = ports - 1 - detectors
    for source, target, sign, name in (("positive", "negative", 1.0, "positive_to_negative"),
                                       ("negative", "positive", -1.0, "negative_to_positive")):
        # The leak into `target` uses the target path's polynomial on the source path's weights.
        poly = chain.pbs_polynomial[target][coefficient_rows]  # [P-1, 3]
        weight = drive[source][:, columns, :]  # [M, P-1 detectors, P_in]: column k of source i
        value = np.sqrt(2.0) * (poly[None, :, 0, None] * weight ** 2 + poly[None, :, 1, None] * weight
                                + poly[None, :, 2, None])
        contribution = sign * value * efficiency[source][None, None, :] / PBS_16_NORMALISATION[name]
        rows[(target, source)][:, detectors, :] += contribution


def loop_gains(setting: np.ndarray, chain: MeasuredChain, nominal: ChainSpec, nonidealities: NonIdealities
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per port: the factor κ·s/N on the detector difference and the closed-loop offset κ·r(δ + s λ).

    ``setting``: the machine's gain setting per port at this phase, [M, P]."""
    kappa = chain.kappa if nonidealities.gain_error.enabled else np.full(chain.ports, nominal.loop_gain)
    factor = kappa[None, :] * setting / chain.ports
    offset = np.zeros_like(setting)
    if nonidealities.offsets.enabled:
        offset = kappa[None, :] * chain.adc_ratio * (chain.dc_offset[None, :] + setting * chain.linear_offset[None, :])
    return factor, offset
