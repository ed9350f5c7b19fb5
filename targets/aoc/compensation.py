"""Compile for a measured machine: grey levels, gains and injected voltages that make one calibrated AOC
realise the program (``admc build --calibration``).

Requires: the placed program's signed normalised transmissions per tile (β T = (1 − α) W, |T| ≤ 1), the
normalised gains β per port, each port's gain floor, the target (nominal chain, setting range, SLM depth)
and the machine's ``MeasuredChain`` (``chain.measured_chain``) for its module size; placement must already
avoid dead ports (``tiling.place_blocks_avoiding``).

Guarantees, per module (each input port's light taken as affine in the program's σ: the small-signal model
at z = 0, or the channel's fitted operating point ``PortLight``; the rest of the curvature is what remains):
  * the effective signed transmission κ_p (B⁺ r⁺ + B⁻ r⁻) / (FS ρ̄ η̄ κ̄) of the measured chain (B± from
    ``chain.path_matrices`` with every optical effect on, r±_q each path's light slope at input port q
    relative to nominal) equals the intended T / f_p on every used pixel, up to half a grey level of that column's
    and path's measured transfer, where representable: per-column full scale, the path ratio, input
    efficiency ρ, output gain η and κ are in the grey levels; the darkness leak, the 48-port PBS leak and
    each path's photodiode spill into used detectors are pre-compensated by solving
    X⁺A⁺ − X⁻A⁻ + C = T / (f κ) over the used detectors (A± the paths' modulation, disjoint in support);
  * f_p rescales each port's gain setting so the row uses its whole range (β' = f β, within the setting range):
    the row's largest pixel is at full scale, so each module's image peaks at full scale unless every row of
    it is at a gain limit (``modules_below_full_scale``); a pixel still out of range is clipped and reported
    (``remainder``);
  * the machine's static output at z = 0 — closed-loop offset r(δ + s λ) at the port's actual setting, the
    darkness constant of the spill, the LEDs' rest light (at z = 0 or the fitted operating point; an unused
    input port is lit as the makers' cell lights it, at its voltage 0, and its light leaks through its column's
    darkness) — is returned as a cancelling injection, split into a part fixed per port and a part
    proportional to the run-time gain factor. Unused output ports (gain setting 0) get their closed-loop
    offset cancelled too, so their voltage, which drives their LED, stays at 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from admc.core.errors import AdmcError
from admc.targets.aoc.chain import MeasuredChain, path_matrices
from admc.targets.aoc.nonidealities import NonIdealities

PATHS = ("positive", "negative")
# A row's worst pixel is driven to its column's full scale: each module's image then peaks at the SLM's full
# scale, the normalisation the makers' cell applies (it divides W by max |W|), so an operator loads the grey
# levels as they are. The row-factor iteration lands near full scale, not on it: a need above full scale by
# less than half the top grey step rounds to full scale as any pixel rounds to its nearest level, and is not
# counted as clipped; α is raised only for a row beyond this relative tolerance.
REACH_TOLERANCE = 1e-6
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
    excess: np.ndarray  # [M, P] worst needed / reachable modulation of the row (> 1: clipped)
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


@dataclass(frozen=True)
class PortLight:
    """Per module and input port, each path's light model: light ≈ rest + slope·d·C̄·σ (slope relative to the
    nominal d·C̄, rest in raw light). Default: the small-signal model at z = 0, the same on every port. An
    unused port's rest is its light at z = 0: it is lit, held at 0 V (``compensate``)."""

    slope: dict[str, np.ndarray]  # path -> [M, P]
    rest: dict[str, np.ndarray]  # path -> [M, P]


def small_signal_ports(chain: MeasuredChain, nominal, modules: int) -> PortLight:
    slope, rest = small_signal(chain, nominal), zero_state_light(chain)
    return PortLight({path: np.full((modules, chain.ports), slope[path]) for path in PATHS},
                     {path: np.full((modules, chain.ports), rest[path]) for path in PATHS})


@dataclass(frozen=True)
class _Machine:
    """What every module's compensation reads: the chain and its light model, the nominal unit of normalised
    transmission, each column's grey-level modulations and full scale per path, each path's spill."""

    chain: MeasuredChain
    target: Any
    port_light: PortLight
    unit: float
    levels: dict[str, np.ndarray]  # path -> [P, levels]
    full: dict[str, np.ndarray]  # path -> [P]
    spill: dict[str, np.ndarray]  # path -> [P, P]
    no_spill: NonIdealities


def _machine(chain: MeasuredChain, target, port_light: PortLight) -> _Machine:
    ports, nominal, bits = target.module.ports, target.chain, target.slm.bit_depth
    for path in PATHS:
        a, b = chain.transfer[path][:, 0], chain.transfer[path][:, 1]
        if np.any(b <= 0) or np.any(2 * a + b <= 0):
            raise AdmcError(f"calibration: column_wise_weights_distortion {path}: a transfer is not increasing")
    unit = nominal.slm_full_scale * nominal.input_efficiency * nominal.output_gain * nominal.loop_gain
    levels = {path: _levels(chain.transfer[path], bits) for path in PATHS}
    spill = {path: np.eye(ports) + np.diag(chain.to_earlier[path][1:], 1) + np.diag(chain.to_later[path][:-1], -1)
             for path in PATHS}
    no_spill = replace(optical_effects_on(), pd_crosstalk=replace(optical_effects_on().pd_crosstalk, enabled=False))
    return _Machine(chain, target, port_light, unit, levels, {path: levels[path][:, -1] for path in PATHS}, spill,
                    no_spill)


def compensate(placement, tile_transmissions: list[np.ndarray], beta: np.ndarray, floors: np.ndarray,
               target, chain: MeasuredChain, port_light: PortLight | None = None) -> Compensated:
    """``port_light``: each input port's light model (``operating_point``); default the small-signal one."""
    ports, modules, bits = target.module.ports, placement.modules_used, target.slm.bit_depth
    if port_light is None:
        port_light = small_signal_ports(chain, target.chain, modules)
    machine = _machine(chain, target, port_light)
    result = Compensated({path: np.zeros((modules, ports, ports), dtype=np.uint8 if bits <= 8 else np.uint16)
                          for path in PATHS}, {path: np.zeros((modules, ports, ports)) for path in PATHS},
                         beta.copy(), np.zeros((modules, ports)), np.zeros((modules, ports)),
                         np.zeros((modules, ports)))
    remainder = {"clipped_pixels": 0, "worst_clip_relative": 0.0, "rows_at_setting_max": 0}
    for module in range(modules):
        tiles = [(tile, transmission) for tile, transmission in zip(placement.tiles, tile_transmissions, strict=True)
                 if tile.module == module]
        _compensate_module(machine, module, tiles, beta[module], floors[module], result, remainder)
    result.report = {
        "compensated": ["dead ports avoided by placement", "SLM transfer per column and path (quantised through it)",
                        "input efficiency ρ", "output gain η",
                        "path ratio and each channel's σ·LED light scale (its operating point)",
                        "loop gain κ", "darkness leak", "PBS leak", "photodiode neighbour spill, each path's own",
                        "closed-loop offset at each port's setting, darkness constant and each channel's rest "
                        "light (injected voltages)"],
        "not_compensated": ["the σ·LED curvature beyond each channel's affine match to tanh",
                            "the 16-port format's PBS polynomials"],
        "remainder": remainder,
    }
    return result


def _compensate_module(machine: _Machine, module: int, tiles: list, beta: np.ndarray, floors: np.ndarray,
                       result: Compensated, remainder: dict) -> None:
    """One module's grey levels, gain factors, realised transmissions and cancelling injections, written into
    ``result`` (being built by :func:`compensate`); clipped pixels and capped rows counted in ``remainder``."""
    chain, ports = machine.chain, machine.target.module.ports
    slope = {path: machine.port_light.slope[path][module] for path in PATHS}
    # Modulation coefficient of each pixel per path (normalised, before κ): η_p ρ_q r_q / unit.
    coefficient = {path: chain.output_gain[path][:, None] * chain.efficiency[path][None, :] * slope[path]
                   / machine.unit for path in PATHS}
    wanted = np.zeros((ports, ports))
    used_out, used_in = np.zeros(ports, dtype=bool), np.zeros(ports, dtype=bool)
    for tile, transmission in tiles:
        rows = slice(tile.output_port_start, tile.output_port_stop)
        columns = slice(tile.input_port_start, tile.input_port_stop)
        wanted[rows, columns] = transmission
        used_out[rows], used_in[columns] = True, True
    out = np.flatnonzero(used_out)
    if out.size == 0:
        return
    modulation = _spill_inverse(machine, slope, wanted, out, used_in)
    factor = _row_factors(machine, modulation, coefficient, wanted, out, used_in, beta, floors, remainder)
    needed = modulation(factor)
    reach = _reach(machine, coefficient, needed, out)
    result.excess[module, out] = np.where(used_in[None, :], np.abs(needed) / np.maximum(reach, 1e-300),
                                          0.0).max(axis=1)
    _grey_levels(machine, coefficient, needed, out, used_in, result.grey, module, remainder)
    result.beta[module] = beta * factor
    matrices = _realise(machine, module, tiles, slope, result)
    # Static output at z = 0 (per unit gain factor and fixed), cancelled through the injection.
    light = {path: machine.port_light.rest[path][module] for path in PATHS}
    settings = result.beta[module] / machine.target.chain.gain_per_setting
    dark_light = matrices.positive[0] @ light["positive"] + matrices.negative[0] @ light["negative"] \
        + matrices.constant[0]
    per_factor = chain.kappa * settings / ports * dark_light + chain.kappa * chain.adc_ratio * settings \
        * chain.linear_offset
    result.cancel_per_factor[module] = -per_factor * used_out
    result.cancel_fixed[module] = -chain.kappa * chain.adc_ratio * chain.dc_offset


def _spill_inverse(machine: _Machine, slope: dict, wanted: np.ndarray, out: np.ndarray, used_in: np.ndarray):
    """The modulation D(f) one module's used detectors need for row gain factors f (see the closure)."""
    chain, nominal, ports, unit, spill = machine.chain, machine.target.chain, machine.target.module.ports, \
        machine.unit, machine.spill
    # Light every pixel lit by a used source passes at u = 0 (darkness c; 48-port format: PBS leak),
    # per path, through that path's spill: the constant C_R the modulation must absorb.
    zero = {path: np.zeros((1, ports, ports)) for path in PATHS}
    leak = path_matrices(zero, {path: (0.0, 1.0, 0.0) for path in PATHS}, chain, nominal, machine.no_spill)
    leak_paths = {"positive": leak.positive[0] * slope["positive"] / unit * used_in[None, :],
                  "negative": -leak.negative[0] * slope["negative"] / unit * used_in[None, :]}
    constant = (spill["positive"] @ leak_paths["positive"] - spill["negative"] @ leak_paths["negative"])[out]
    mean_spill = 0.5 * (spill["positive"] + spill["negative"])[np.ix_(out, out)]
    half_difference = 0.5 * (spill["positive"] - spill["negative"])[np.ix_(out, out)]
    mean_inverse = np.linalg.inv(mean_spill)
    mask = used_in[None, :]

    def modulation(row_factor: np.ndarray) -> np.ndarray:
        """D = A⁺ − A⁻ on the used detectors solving X⁺A⁺ − X⁻A⁻ + C = T/(f κ), i.e.
        D = X̄⁻¹ (T/(f κ) − C − Δ|D|) with X± = X̄ ± Δ (a contraction: Δ is a few percent)."""
        goal = wanted[out] / (row_factor[out, None] * chain.kappa[out, None]) - constant
        result = mean_inverse @ goal * mask
        for _ in range(ROW_ITERATIONS):
            result = mean_inverse @ (goal - half_difference @ np.abs(result)) * mask
        return result

    return modulation


def _reach(machine: _Machine, coefficient: dict, needed: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The largest modulation each needed pixel's path can give on the used detectors."""
    return np.where(needed >= 0, coefficient["positive"][out] * machine.full["positive"][out, None],
                    coefficient["negative"][out] * machine.full["negative"][out, None])


def _row_factors(machine: _Machine, modulation, coefficient: dict, wanted: np.ndarray, out: np.ndarray,
                 used_in: np.ndarray, beta: np.ndarray, floors: np.ndarray, remainder: dict) -> np.ndarray:
    """f per output port: each used row scaled to use its whole reach, within the gain range."""
    factor = np.ones(machine.target.module.ports)
    row_floor = floors / np.maximum(beta, 1e-300)
    row_ceiling = machine.target.gain.beta_max / np.maximum(beta, 1e-300)
    mask = used_in[None, :]
    for _ in range(ROW_ITERATIONS):
        needed = modulation(factor)
        reach = _reach(machine, coefficient, needed, out)
        ratio = np.where(mask, np.abs(needed) / np.maximum(reach, 1e-300), 0.0)
        worst = ratio.max(axis=1, initial=0.0)
        has_weights = np.abs(wanted[out]).max(axis=1, initial=0.0) > 0
        update = np.where(has_weights & (worst > 0), worst, 1.0)
        factor[out] = np.clip(factor[out] * update, row_floor[out], np.maximum(row_ceiling[out], row_floor[out]))
    remainder["rows_at_setting_max"] += int(np.sum(np.isclose(factor[out], row_ceiling[out])
                                                   & (row_ceiling[out] > row_floor[out])))
    return factor


def _grey_levels(machine: _Machine, coefficient: dict, needed: np.ndarray, out: np.ndarray, used_in: np.ndarray,
                 grey: dict[str, np.ndarray], module: int, remainder: dict) -> None:
    """Each path's nearest grey levels through its column's measured transfer (clipped at full scale)."""
    levels, full, ports = machine.levels, machine.full, machine.target.module.ports
    for path, sign in (("positive", 1.0), ("negative", -1.0)):
        share = np.maximum(sign * needed, 0.0) / np.maximum(coefficient[path][out], 1e-300)
        overflow = share - full[path][out, None]
        half_step = 0.5 * (levels[path][out, -1] - levels[path][out, -2])
        clipped = overflow > half_step[:, None]
        if np.any(clipped):
            remainder["clipped_pixels"] += int(np.sum(clipped))
            remainder["worst_clip_relative"] = max(remainder["worst_clip_relative"],
                                                   float(np.max(overflow / full[path][out, None])))
        index = _nearest(levels[path][out], np.minimum(share, full[path][out, None]))
        image = np.zeros((ports, ports), dtype=np.int64)
        image[out] = index * used_in[None, :]
        grey[path][module] = image.T


def _realise(machine: _Machine, module: int, tiles: list, slope: dict, result: Compensated):
    """What the machine now realises, from the chain itself (every optical effect on): each tile window's
    effective transmissions into ``result``; returns the module's path matrices."""
    chain, bits = machine.chain, machine.target.slm.bit_depth
    drive = {path: (result.grey[path][module].T.astype(np.float64) / (2 ** bits - 1))[None] for path in PATHS}
    matrices = path_matrices(drive, {path: (0.0, 1.0, 0.0) for path in PATHS}, chain, machine.target.chain,
                             optical_effects_on())
    realised = chain.kappa[:, None] * (matrices.positive[0] * slope["positive"]
                                       + matrices.negative[0] * slope["negative"]) / machine.unit
    for tile, _ in tiles:
        rows = slice(tile.output_port_start, tile.output_port_stop)
        columns = slice(tile.input_port_start, tile.input_port_stop)
        window = realised[rows, columns]  # β' × this = β × the intended T
        result.effective["positive"][module][columns, rows] = np.maximum(window, 0.0).T
        result.effective["negative"][module][columns, rows] = np.maximum(-window, 0.0).T
    return matrices
