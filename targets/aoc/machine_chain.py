"""The measured chain of one bundle on one calibrated machine: what the twin's calibrated mode executes.

Requires: an AOC bundle (grey levels or float transmissions, per-port gains, the target's nominal ``chain``)
and a ``Calibration``. Guarantees: ``at(class_factor)`` gives, per module and port, the signed matrices on each
path's LED light and the constant of ``chain.path_matrices`` at the machine's gain settings s·factor
(the closed-loop offset evaluated at each port's actual setting; unused input ports lit at voltage 0, as the
makers' cell drives them); ``light`` is each path's LED light per state channel; ``cancellation_at`` is the
offset-cancelling voltage a calibrated build recorded (None otherwise). The settings are the bundle's
``aoc/gain_setting.npy`` when present, else β / G.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from admc.bundle.store import Bundle
from admc.targets.aoc.bundle_reader import input_port_channels, realised_transmissions
from admc.targets.aoc.calibration import Calibration
from admc.targets.aoc.chain import (
    ChainSpec,
    MeasuredChain,
    PathMatrices,
    led_light,
    loop_gains,
    measured_chain,
    path_matrices,
    sigmoid_output,
)
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.slm import drive_for_weight

PATHS = ("positive", "negative")


def nominal_chain(manifest: dict) -> ChainSpec:
    """The target's nominal chain (a unit chain for bundles older than the chain section)."""
    figures = manifest["target"].get("chain")
    if not figures:
        return ChainSpec()
    return ChainSpec(**{key: tuple(value) if isinstance(value, list) else float(value)
                        for key, value in figures.items()})


def slm_drive(bundle: Bundle) -> dict[str, np.ndarray]:
    """Normalised SLM drive u in [0, 1] per path, [M, output port, input port]."""
    section, slm = bundle.manifest["aoc"], bundle.manifest["target"]["slm"]
    if section.get("grey"):
        levels = 2 ** int(slm["bit_depth"]) - 1
        return {path: np.transpose(bundle.array(section["grey"][path]).astype(np.float64) / levels, (0, 2, 1))
                for path in PATHS}
    transmissions = realised_transmissions(bundle)
    return {path: np.transpose(drive_for_weight(np.clip(transmissions[path], 0.0, 1.0),
                                                slm.get(f"response_{path}") or slm["response"]), (0, 2, 1))
            for path in PATHS}


def gain_settings(bundle: Bundle, nominal: ChainSpec) -> np.ndarray:
    section = bundle.manifest["aoc"]
    if section.get("gain_setting"):
        return bundle.array(section["gain_setting"])
    return bundle.array(section["beta"]) / nominal.gain_per_setting


def lit_unused_ports(matrices: PathMatrices, bundle: Bundle, measured: MeasuredChain, nominal: ChainSpec,
                     nonidealities: NonIdealities) -> PathMatrices:
    """The matrices with every unused input port lit as the makers' cell lights it: at voltage 0 (a calibrated
    bundle holds it there, ``compensation``), so its light S(0) through its column is a constant."""
    modules, ports = matrices.constant.shape
    unused = (input_port_channels(bundle, modules, ports) < 0).astype(np.float64)
    rest = led_light(sigmoid_output(torch.zeros(1, dtype=torch.float64), measured, nonidealities), measured, nominal,
                     nonidealities)
    constant = matrices.constant + sum(np.einsum("mpq,mq->mp", getattr(matrices, path), unused)
                                       * float(rest[path][0]) for path in PATHS)
    return replace(matrices, constant=constant)


@dataclass
class MachineChain:
    measured: MeasuredChain
    nominal: ChainSpec
    nonidealities: NonIdealities
    settings: np.ndarray  # [M, P]
    matrices: PathMatrices
    cancellation: tuple[np.ndarray, np.ndarray] | None  # fixed, per unit factor; [M, P] each
    dtype: torch.dtype = torch.float64

    @classmethod
    def of(cls, bundle: Bundle, calibration: Calibration, nonidealities: NonIdealities) -> MachineChain:
        manifest = bundle.manifest
        slm = manifest["target"]["slm"]
        nominal = nominal_chain(manifest)
        drive = slm_drive(bundle)
        ports = drive["positive"].shape[1]
        measured = measured_chain(calibration, ports)
        responses = {path: slm.get(f"response_{path}") or slm["response"] for path in PATHS}
        matrices = lit_unused_ports(path_matrices(drive, responses, measured, nominal, nonidealities), bundle,
                                    measured, nominal, nonidealities)
        cancellation = None
        entry = manifest.get("calibration", {}).get("cancellation")
        if entry:
            cancellation = (bundle.array(entry["fixed"]), bundle.array(entry["per_factor"]))
        return cls(measured, nominal, nonidealities, gain_settings(bundle, nominal), matrices, cancellation)

    def at(self, class_factor: np.ndarray) -> tuple[PathMatrices, np.ndarray]:
        """Matrices scaled by κ·s·factor/N and the per-port constant, at per-port factors [M, P]."""
        factor, offset = loop_gains(self.settings * class_factor, self.measured, self.nominal, self.nonidealities)
        scaled = replace(self.matrices, positive=factor[..., None] * self.matrices.positive,
                         negative=factor[..., None] * self.matrices.negative,
                         constant=factor * self.matrices.constant + offset)
        return scaled, scaled.constant

    def light(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        return led_light(sigmoid_output(state, self.measured, self.nonidealities), self.measured, self.nominal,
                         self.nonidealities)

    def cancellation_at(self, class_factor: np.ndarray) -> np.ndarray:
        fixed, per_factor = self.cancellation
        return fixed + class_factor * per_factor
