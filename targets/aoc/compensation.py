"""Compile for a measured machine: grey levels, gains and injected voltages that make one calibrated AOC
realise the program (``admc build --calibration``).

Requires: the placed program's signed normalised transmissions per tile (β T = (1 − α) W, |T| ≤ 1), the
normalised gains β per port, each port's gain floor, the target (nominal chain, setting range, SLM depth)
and the machine's ``MeasuredChain`` (``chain.measured_chain``) for its module size; placement must already
avoid dead ports (``tiling.place_blocks_avoiding``).

Guarantees, per module (linearised at z = 0: the LED and sigmoid curvature is what remains):
  * the effective signed transmission κ_p (B⁺ r⁺ + B⁻ r⁻) / (FS ρ̄ η̄ κ̄) of the measured chain (B± from
    ``chain.path_matrices`` with every optical effect on, r± each path's small-signal light slope relative
    to nominal) equals the intended T / f_p on every used pixel, up to half a grey level of that column's
    and path's measured transfer, where representable: per-column full scale, the path ratio, input
    efficiency ρ, output gain η and κ are in the grey levels; the darkness leak, the PBS leak and the
    photodiode spill into used detectors (mean of the two paths' ratios) are pre-compensated by solving
    X̄ (D + L) = T / f over the used detectors;
  * f_p rescales each port's gain setting so the row uses its range (β' = f β, within the setting range); a
    pixel still out of range is clipped and reported (``remainder``);
  * the machine's static output at z = 0 — closed-loop offset r(δ + s λ) at the port's actual setting, the
    darkness constant of the spill, the LEDs' light at zero state through the weights — is returned as a
    cancelling injection, split into a part fixed per port and a part proportional to the run-time gain factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from admc.errors import AdmcError
from admc.targets.aoc.chain import MeasuredChain, path_matrices
from admc.targets.aoc.nonidealities import NonIdealities

PATHS = ("positive", "negative")
RANGE_MARGIN = 0.995  # rows are scaled to use this fraction of the reachable range (rounding headroom)
ROW_ITERATIONS = 8


def optical_effects_on() -> NonIdealities:
    """The optical effects a calibrated build compensates, all on (the chain's path matrices)."""
    base = NonIdealities()
    names = ("slm_darkness", "input_efficiency", "pd_crosstalk", "pbs_crosstalk", "slm_transfer", "output_gain")
    return replace(base, **{name: replace(getattr(base, name), enabled=True) for name in names})


def small_signal(chain: MeasuredChain, nominal) -> dict[str, float]:
    """Each path's light slope per unit σ at z = 0, relative to the nominal d·C̄ (σ = tanh(a z) ≈ a z)."""
    a, b, c, d, f, g = (float(value) for value in chain.sigmoid)
    t0 = d * b / (1.0 + abs(b) ** c) ** (1.0 / c) + f
    sigmoid_slope = d * a * (1.0 + abs(b) ** c) ** (-1.0 - 1.0 / c) + g
    result = {}
    for path in PATHS:
        cubic, square, linear, _ = (float(value) for value in chain.led[path])
        led_slope = 3.0 * cubic * t0 * t0 + 2.0 * square * t0 + linear
        result[path] = led_slope * sigmoid_slope / a / nominal.light_per_sigma
    return result


def zero_state_light(chain: MeasuredChain) -> dict[str, float]:
    a, b, c, d, f, g = (float(value) for value in chain.sigmoid)
    t0 = d * b / (1.0 + abs(b) ** c) ** (1.0 / c) + f
    return {path: float(np.polyval(chain.led[path], t0)) for path in PATHS}


@dataclass
class Compensated:
    grey: dict[str, np.ndarray]  # [M, input port, output port]
    effective: dict[str, np.ndarray]  # [M, input port, output port], normalised, tile windows only
    beta: np.ndarray  # [M, P] normalised
    cancel_fixed: np.ndarray  # [M, P] volts added to the injection
    cancel_per_factor: np.ndarray  # [M, P] volts × the port's run-time gain factor
    report: dict = field(default_factory=dict)


def _levels(transfer: np.ndarray, bit_depth: int) -> np.ndarray:
    """Modulation a u² + b u of every grey level, per column: [P, levels]."""
    u = np.arange(2 ** bit_depth) / (2 ** bit_depth - 1)
    return transfer[:, :1] * u[None, :] ** 2 + transfer[:, 1:2] * u[None, :]


def _nearest(levels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Per row p of ``wanted`` [P, Q], the index of the nearest value in ``levels[p]`` (increasing)."""
    result = np.zeros(wanted.shape, dtype=np.int64)
    for row in range(wanted.shape[0]):
        upper = np.clip(np.searchsorted(levels[row], wanted[row]), 1, levels.shape[1] - 1)
        lower = upper - 1
        result[row] = np.where(levels[row][upper] - wanted[row] < wanted[row] - levels[row][lower], upper, lower)
    return result


def compensate(placement, tile_transmissions: list[np.ndarray], beta: np.ndarray, floors: np.ndarray,
               target, chain: MeasuredChain) -> Compensated:
    ports, modules, nominal = target.module.ports, placement.modules_used, target.chain
    bits = target.slm.bit_depth
    for path in PATHS:
        a, b = chain.transfer[path][:, 0], chain.transfer[path][:, 1]
        if np.any(b <= 0) or np.any(2 * a + b <= 0):
            raise AdmcError(f"calibration: column_wise_weights_distortion {path}: a transfer is not increasing")
    unit = nominal.slm_full_scale * nominal.input_efficiency * nominal.output_gain * nominal.loop_gain
    slope = small_signal(chain, nominal)
    crosstalk = 0.5 * sum(np.eye(ports) + np.diag(chain.to_earlier[path][1:], 1)
                          + np.diag(chain.to_later[path][:-1], -1) for path in PATHS)
    levels = {path: _levels(chain.transfer[path], bits) for path in PATHS}
    full = {path: levels[path][:, -1] for path in PATHS}
    per_setting = nominal.gain_per_setting
    grey = {path: np.zeros((modules, ports, ports), dtype=np.uint8 if bits <= 8 else np.uint16) for path in PATHS}
    effective = {path: np.zeros((modules, ports, ports)) for path in PATHS}
    new_beta = beta.copy()
    cancel_fixed, cancel_per_factor = np.zeros((modules, ports)), np.zeros((modules, ports))
    clipped_pixels, worst_clip, capped_rows = 0, 0.0, 0
    # Modulation coefficient of each pixel per path (normalised): κ_p η_p ρ_q r / unit.
    coefficient = {path: chain.kappa[:, None] * chain.output_gain[path][:, None] * chain.efficiency[path][None, :]
                   * slope[path] / unit for path in PATHS}
    for module in range(modules):
        tiles = [(tile, transmission) for tile, transmission in zip(placement.tiles, tile_transmissions, strict=True)
                 if tile.module == module]
        wanted = np.zeros((ports, ports))
        used_out, used_in = np.zeros(ports, dtype=bool), np.zeros(ports, dtype=bool)
        for tile, transmission in tiles:
            rows = slice(tile.output_port_start, tile.output_port_stop)
            columns = slice(tile.input_port_start, tile.input_port_stop)
            wanted[rows, columns] = transmission
            used_out[rows], used_in[columns] = True, True
        # Leak L at u = 0 on every pixel lit by a used source: darkness c and (48-port format) the PBS leak.
        zero = {path: np.zeros((1, ports, ports)) for path in PATHS}
        leak_matrices = path_matrices(zero, {path: (0.0, 1.0, 0.0) for path in PATHS}, chain, nominal,
                                      replace(optical_effects_on(), pd_crosstalk=replace(
                                          optical_effects_on().pd_crosstalk, enabled=False)))
        leak = (chain.kappa[:, None] * (leak_matrices.positive[0] * slope["positive"]
                                        + leak_matrices.negative[0] * slope["negative"]) / unit) * used_in[None, :]
        out = np.flatnonzero(used_out)
        if out.size == 0:
            continue
        rest = np.flatnonzero(~used_out)
        spill_inverse = np.linalg.inv(crosstalk[np.ix_(out, out)])
        from_rest = crosstalk[np.ix_(out, rest)] @ leak[rest]
        factor = np.ones(ports)
        row_floor = floors[module] / np.maximum(beta[module], 1e-300)
        row_ceiling = target.gain.beta_max / np.maximum(beta[module], 1e-300)

        def modulation(row_factor: np.ndarray, wanted=wanted, out=out, spill_inverse=spill_inverse,
                       from_rest=from_rest, leak=leak, used_in=used_in) -> np.ndarray:
            """D over the used detectors: X̄_RR⁻¹ (T_R / f − X̄_RU L_U) − L_R on the used sources."""
            scaled = wanted[out] / row_factor[out, None]
            return (spill_inverse @ (scaled - from_rest) - leak[out]) * used_in[None, :]

        for _ in range(ROW_ITERATIONS):
            needed = modulation(factor)
            reach = np.where(needed >= 0, coefficient["positive"][out] * full["positive"][out, None],
                             coefficient["negative"][out] * full["negative"][out, None])
            ratio = np.where(used_in[None, :], np.abs(needed) / np.maximum(reach, 1e-300), 0.0)
            worst = ratio.max(axis=1, initial=0.0)
            has_weights = np.abs(wanted[out]).max(axis=1, initial=0.0) > 0
            update = np.where(has_weights & (worst > 0), worst / RANGE_MARGIN, 1.0)
            factor[out] = np.clip(factor[out] * update, row_floor[out], np.maximum(row_ceiling[out], row_floor[out]))
        capped_rows += int(np.sum(np.isclose(factor[out], row_ceiling[out]) & (row_ceiling[out] > row_floor[out])))
        needed = modulation(factor)
        for path, sign in (("positive", 1.0), ("negative", -1.0)):
            share = np.maximum(sign * needed, 0.0) / np.maximum(coefficient[path][out], 1e-300)
            excess = share - full[path][out, None]
            if np.any(excess > 1e-12):
                clipped_pixels += int(np.sum(excess > 1e-12))
                worst_clip = max(worst_clip, float(np.max(excess / full[path][out, None])))
            index = _nearest(levels[path][out], np.minimum(share, full[path][out, None]))
            image = np.zeros((ports, ports), dtype=np.int64)
            image[out] = index * used_in[None, :]
            grey[path][module] = image.T
        new_beta[module] = beta[module] * factor
        # What the machine now realises, from the chain itself (every optical effect on).
        drive = {path: (grey[path][module].T.astype(np.float64) / (2 ** bits - 1))[None] for path in PATHS}
        matrices = path_matrices(drive, {path: (0.0, 1.0, 0.0) for path in PATHS}, chain, nominal,
                                 optical_effects_on())
        realised = chain.kappa[:, None] * (matrices.positive[0] * slope["positive"]
                                           + matrices.negative[0] * slope["negative"]) / unit
        for tile, _ in tiles:
            rows = slice(tile.output_port_start, tile.output_port_stop)
            columns = slice(tile.input_port_start, tile.input_port_stop)
            window = realised[rows, columns]  # β' × this = β × the intended T
            effective["positive"][module][columns, rows] = np.maximum(window, 0.0).T
            effective["negative"][module][columns, rows] = np.maximum(-window, 0.0).T
        # Static output at z = 0 (per unit gain factor and fixed), cancelled through the injection.
        light = zero_state_light(chain)
        settings = new_beta[module] / per_setting
        dark_light = (matrices.positive[0] @ (light["positive"] * used_in) + matrices.negative[0]
                      @ (light["negative"] * used_in) + matrices.constant[0])
        per_factor = chain.kappa * settings / ports * dark_light + chain.kappa * chain.adc_ratio * settings \
            * chain.linear_offset
        fixed = chain.kappa * chain.adc_ratio * chain.dc_offset
        cancel_per_factor[module] = -per_factor * used_out
        cancel_fixed[module] = -fixed * used_out
    report = {
        "compensated": ["dead ports avoided by placement", "SLM transfer per column and path (quantised through it)",
                        "input efficiency ρ", "output gain η", "path ratio (each path's LED slope at z = 0)",
                        "loop gain κ", "darkness leak", "PBS leak", "photodiode neighbour spill (mean of paths)",
                        "closed-loop offset at each port's setting, darkness constant and zero-state light "
                        "(injected voltages)"],
        "not_compensated": ["LED and sigmoid curvature (light is linearised at z = 0)",
                            "the measured sigmoid's shape against tanh",
                            "the two paths' different photodiode spill ratios (their mean is compensated)"],
        "remainder": {"clipped_pixels": clipped_pixels, "worst_clip_relative": worst_clip,
                      "rows_at_setting_max": capped_rows},
    }
    return Compensated(grey, effective, new_beta, cancel_fixed, cancel_per_factor, report)
