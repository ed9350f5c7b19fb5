"""How a change of the program's weights moves what one AOC bundle loads, as a torch function (fine-tuning).

Why a change and not a rebuild: everything the lowering decided for the source's own weights (placement, α,
gains and gain settings, the σ-shape compensation, a calibrated build's grey levels, row factors, cancelling
injections and operating points) stays fixed, and is exactly what the bundle holds. A change ΔW of a scaled
program block moves each of its pixels' normalised transmissions by ΔT = (1 − α)·ΔW / β (the identity the
lowering keeps, ``channel_gains.py``), in the loaded units (× the σ-shape scale k of a compensated bundle); on a
measured machine the pixel's own chain (η, ρ, κ, gain setting, the LED light per σ) converts ΔT to a change of
the SLM transfer, which is what its path matrices are affine in (``chain.path_matrices``). The changed value is
requantised on the pixel's own grid (the target's grey levels through its response, or the measured column
transfer) with a straight-through estimator (quantised forward, identity gradient). The sign of a pixel stays on
its path; a weight pushed through zero continues on the other path. ΔW = 0 gives the bundle's arrays exactly.

Requires: an ``AocTwin`` of a bundle with one image set (per-channel gains). Guarantees: :meth:`OpticsDelta.
optics` gives the twin's signed module optics [M, P_out, P_in] (nominal), :meth:`OpticsDelta.path_matrices` the
measured chain's matrices per path (calibrated), both as torch functions of the flat ΔW (autograd through
them), equal to the twin's own for ΔW = 0.
"""

from __future__ import annotations

import numpy as np
import torch

from admc.core.errors import AdmcError
from admc.targets.aoc.bundle_reader import image_sets, tile_block_index, tile_channels
from admc.targets.aoc.chain import _crosstalk_matrix, loop_gains
from admc.targets.aoc.machine_chain import PATHS, slm_drive
from admc.targets.aoc.physics import module_matrices
from admc.targets.aoc.sigma_shape import port_scales

TINY_GAIN = 1e-12  # a pixel whose chain passes less than this (a dead port) takes no change


def saturated(value: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``value`` [M, P_out, P_in] held at its row's full scale (the top of ``grid`` [P_out, L]), with no gradient
    past it. Why: the compiled structure puts each module's largest pixels at full scale, so a weight pushed up
    there does not move what the machine loads; the straight-through estimator alone would still pass its gradient,
    the optimiser would keep pushing a weight the loss cannot see, and the next rebuild (new gains) would realise
    all of it at once. Held here, as the nominal target's ``clamp(max=1)`` holds it, the fit sees what it gets
    (``hold_full_scale``; measured on two moons hw48 it fits worse, so it is off by default)."""
    top = grid[:, -1][None, :, None]
    return torch.where(value > top, top.expand_as(value), value)


def straight_through(value: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
    """The nearest point of ``grid`` [P_out, L] (increasing per row; ties to the lower point) for each entry of
    ``value`` [M, P_out, P_in], with the identity gradient; ``grid`` None: the value itself."""
    if grid is None:
        return value
    modules, outputs, inputs = value.shape
    rows = value.detach().permute(1, 0, 2).reshape(outputs, -1).contiguous()
    upper = torch.searchsorted(grid, rows).clamp(1, grid.shape[1] - 1)
    lower = upper - 1
    high, low = grid.gather(1, upper), grid.gather(1, lower)
    nearest = torch.where((high - rows) < (rows - low), high, low)
    nearest = nearest.reshape(outputs, modules, inputs).permute(1, 0, 2)
    return value + (nearest - value).detach()


def split_change(positive: torch.Tensor, negative: torch.Tensor, change: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both paths after a signed change: on the pixel's larger path, the rest pushed through zero to the other."""
    major_positive = positive >= negative
    moved_positive = positive + change
    moved_negative = negative - change
    new_positive = torch.where(major_positive, moved_positive.clamp_min(0.0),
                               positive + (-moved_negative).clamp_min(0.0))
    new_negative = torch.where(major_positive, negative + (-moved_positive).clamp_min(0.0),
                               moved_negative.clamp_min(0.0))
    return new_positive, new_negative


class OpticsDelta:
    """The bundle's pixel map and loaded values, and the change of its optics for a ΔW (module docstring)."""

    def __init__(self, twin, block_shapes: list[tuple[int, int]], quantise: bool = True,
                 hold_full_scale: bool = False):
        """``quantise`` False: the changed values are neither requantised nor clipped to full scale (the smooth
        map a gradient check differentiates). ``hold_full_scale``: on a measured machine, a pixel past full scale
        gets no gradient (``saturated``); without it, the straight-through gradient (the default)."""
        self.hold_full_scale = hold_full_scale
        bundle = twin.bundle
        if len(image_sets(bundle)) != 1:
            raise AdmcError(f"{bundle.path}: fine-tuning needs a target with per-channel gains (this bundle holds "
                            "one image set per step factor)")
        self.twin = twin
        offsets = np.cumsum([0] + [rows * columns for rows, columns in block_shapes])
        layout, alpha = bundle.manifest["layout"], twin.alpha.cpu().numpy()
        beta = twin.beta.cpu().numpy()
        entries = []
        for tile in bundle.manifest["aoc"]["tiles"]:
            block = tile_block_index(layout, tile)
            rows = np.arange(tile["row_start"], tile["row_stop"])
            columns = np.arange(tile["column_start"], tile["column_stop"])
            row_grid, column_grid = np.meshgrid(rows, columns, indexing="ij")
            outputs = tile["output_port_start"] + row_grid - tile["row_start"]
            inputs = tile["input_port_start"] + column_grid - tile["column_start"]
            channels = np.broadcast_to(tile_channels(bundle, tile)[:, None], row_grid.shape)
            factor = (1.0 - alpha[channels]) / beta[tile["module"], outputs]
            flat = offsets[block] + row_grid * block_shapes[block][1] + column_grid
            entries.append(np.stack([np.full(row_grid.size, tile["module"]), outputs.ravel(), inputs.ravel(),
                                     flat.ravel()]).T)
            entries[-1] = (entries[-1], factor.ravel())
        index = np.concatenate([entry[0] for entry in entries]).astype(np.int64)
        self.module, self.output, self.input, self.flat = (torch.as_tensor(index[:, k]) for k in range(4))
        self.factor = twin._tensor(np.concatenate([entry[1] for entry in entries]))
        self.shape = tuple(twin.positive.shape)
        compensation = bundle.manifest["aoc"].get("sigma_compensation") if twin.calibration is None else None
        self.per_port = None
        if compensation:
            channels = twin.input_channel.cpu().numpy()
            self.per_port = twin._tensor(port_scales(bundle.array(compensation["output_scale"]), channels))
        if twin.chain is None:
            self._nominal_grids()
        else:
            self._chain_grids()
        self.quantise = quantise
        if not quantise:
            self.grids = {path: None for path in PATHS}

    def transmission_change(self, flat_change: torch.Tensor) -> torch.Tensor:
        """ΔT [M, P_out, P_in] (normalised, signed) of a flat ΔW over the program's blocks."""
        values = self.factor * flat_change[self.flat]
        placed = torch.zeros(self.shape, dtype=values.dtype, device=values.device)
        return placed.index_put((self.module, self.output, self.input), values, accumulate=True)

    # -- nominal target ------------------------------------------------------------------------------
    def _nominal_grids(self) -> None:
        twin, bundle = self.twin, self.twin.bundle
        slm = bundle.manifest["target"]["slm"]
        entry = image_sets(bundle)[0]
        self.grids = {path: None for path in PATHS}
        if entry.get("grey"):
            from admc.targets.aoc.slm import grey_level_weights

            for path in PATHS:
                levels = grey_level_weights(slm.get(f"response_{path}") or slm["response"], int(slm["bit_depth"]))
                self.grids[path] = twin._tensor(np.tile(levels, (self.shape[1], 1)))

    def optics(self, flat_change: torch.Tensor) -> torch.Tensor:
        """The twin's ``optics`` for the changed weights (nominal target)."""
        twin = self.twin
        change = self.transmission_change(flat_change)
        if self.per_port is not None:
            change = change * self.per_port[:, None, :]
        positive, negative = split_change(twin.positive, twin.negative, change)
        if self.quantise:  # the smooth map (a gradient check's) keeps values past full scale
            positive, negative = positive.clamp(max=1.0), negative.clamp(max=1.0)
        positive = straight_through(positive, self.grids["positive"])
        negative = straight_through(negative, self.grids["negative"])
        optics = module_matrices(positive, negative, twin.nonidealities, twin.static_errors)
        if self.per_port is not None and not twin.nonidealities.nonlinearity.enabled:
            optics = optics / self.per_port[:, None, :]
        return optics

    # -- measured machine ----------------------------------------------------------------------------
    def _chain_grids(self) -> None:
        twin, chain = self.twin, self.twin.chain
        effects, measured, nominal = chain.nonidealities, chain.measured, chain.nominal
        slm = twin.bundle.manifest["target"]["slm"]
        top = 2 ** int(slm["bit_depth"]) - 1
        steps = np.arange(top + 1, dtype=np.float64) / top
        drive = slm_drive(twin.bundle)
        if not effects.slm_transfer.enabled:
            raise AdmcError("fine-tuning on a measured machine needs its SLM transfer switched on")
        unit, _ = loop_gains(chain.settings, measured, nominal, effects)
        self.base, self.grids, self.pixel_gain, self.crosstalk = {}, {}, {}, {}
        for path in PATHS:
            a, b = measured.transfer[path][:, 0], measured.transfer[path][:, 1]
            u = drive[path]  # the same arithmetic as chain._same_path_rows, so the grid holds its values exactly
            self.base[path] = twin._tensor(a[None, :, None] * u * u + b[None, :, None] * u)
            self.grids[path] = twin._tensor(a[:, None] * steps[None, :] * steps[None, :] + b[:, None] * steps[None, :])
            efficiency = measured.efficiency[path] if effects.input_efficiency.enabled else np.full(
                measured.ports, nominal.input_efficiency)
            gain = measured.output_gain[path] if effects.output_gain.enabled else np.full(
                measured.ports, nominal.output_gain)
            self.pixel_gain[path] = twin._tensor(gain[None, :, None] * efficiency[None, None, :]
                                                 * np.ones(self.shape))
            self.crosstalk[path] = (twin._tensor(_crosstalk_matrix(measured.to_earlier[path], measured.to_later[path]))
                                    if effects.pd_crosstalk.enabled else None)
        # The machine's loop gain per unit of transfer at each pixel, against the program's β per unit ΔT.
        machine = twin._tensor(unit)[:, :, None] * self.pixel_gain["positive"] * nominal.light_per_sigma
        self.transfer_per_weight = torch.where(machine > TINY_GAIN, twin.beta[:, :, None] / machine,
                                               torch.zeros_like(machine))

    def path_changes(self, flat_change: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The change of the chain's (positive, negative) path matrices [M, P_out, P_in] for a flat ΔW."""
        change = self.transmission_change(flat_change) * self.transfer_per_weight
        positive, negative = split_change(self.base["positive"], self.base["negative"], change)
        results = []
        for path, value, sign in (("positive", positive, 1.0), ("negative", negative, -1.0)):
            if self.grids[path] is not None and self.hold_full_scale:
                value = saturated(value, self.grids[path])
            quantised = straight_through(value, self.grids[path])
            rows = self.pixel_gain[path] * (quantised - self.base[path])
            if self.crosstalk[path] is not None:
                rows = torch.einsum("pk,mkq->mpq", self.crosstalk[path], rows)
            results.append(sign * rows)
        return results[0], results[1]
