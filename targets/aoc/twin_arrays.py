"""Reading an AOC bundle into the twin's tensors: the channel layout of its program and the optics of its
placed modules (docs/design.md §6).

Requires: a class that mixes ``TwinArrays`` in, with ``bundle``, ``nonidealities``, ``calibration``, ``seed``,
``device`` and ``dtype`` set, calling ``_layout(program, alpha)`` before ``_optics(manifest)``.
Guarantees: ``_layout`` sets per-channel σ gains, activations, held and initialised channel ranges (with their
voltage scales), α (and the open-phase α with held channels unrelaxed), the readout range and the static
injection tables as tensors of the twin's dtype on its device. ``_optics`` sets the realised transmissions
[module, output port, input port] per path (times the σ-shape scales of a compensated bundle), β, the channel
of every input and output port (``size``, a channel reading zero, where no tile uses the port), each output
port's scale class, the static device errors (drawn from the seed, or the measured machine's), each module's
optics as one signed matrix with every path effect folded in, and the measured chain when a calibration is
given.
"""

from __future__ import annotations

import numpy as np
import torch

from admc.ir.adm import is_activation, sigmoid_exponent
from admc.ir.program import SCALE_CLASSES
from admc.targets.aoc.bundle_reader import input_port_channels, realised_transmissions, tile_channels
from admc.targets.aoc.machine_chain import MachineChain
from admc.targets.aoc.measured_device import measured_static_errors
from admc.targets.aoc.physics import module_matrices
from admc.targets.aoc.sigma_shape import port_scales
from admc.targets.aoc.static_errors import sample_static_errors


class TwinArrays:
    """The set-up of ``AocTwin`` (see the module docstring)."""

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _layout(self, program, alpha: np.ndarray) -> None:
        size = program.size
        self.size = size
        self.alpha = self._tensor(alpha)
        gains = np.ones(size)
        tanh = np.zeros(size, dtype=bool)
        group_index = np.zeros(size, dtype=np.int64)
        for index, group in enumerate(program.groups):
            gains[group.offset:group.stop] = group.sigma_gain
            tanh[group.offset:group.stop] = is_activation(group.activation)  # the machine's σ drives them
            group_index[group.offset:group.stop] = index
        self.sigma_gain, self.tanh_channels = self._tensor(gains), torch.as_tensor(tanh, device=self.device)
        self.all_tanh = bool(tanh.all())
        # Groups whose program asks for the algebraic sigmoid itself: with the nonlinearity on the machine's s
        # is theirs exactly (canonicalisation admits only the declared exponent); with it off they get it too.
        self.program_sigmoids = [(slice(group.offset, group.stop), group.activation) for group in program.groups
                                 if sigmoid_exponent(group.activation) is not None]
        self.group_slices = [slice(group.offset, group.stop) for group in program.groups]
        self.group_index = torch.as_tensor(group_index, device=self.device)
        self.held = [(slice(group.offset, group.stop), group.voltage_scale)
                     for group in program.groups if group.held]
        self.initialised = [(slice(group.offset, group.stop), group.voltage_scale)
                            for group in program.groups if group.role in ("state", "readout")]
        open_alpha = np.asarray(alpha, dtype=np.float64).copy()
        for channels, _ in self.held:
            open_alpha[channels] = 0.0
        self.open_alpha = self._tensor(open_alpha)
        # An open phase runs its held rows unrelaxed (α = 0, as the program's semantics say): the machine sets
        # those rows' gain to β/(1 − α) for the phase, so the twin undoes the (1 − α) share the images and
        # the drive carry for them.
        alpha_vector = np.asarray(alpha, dtype=np.float64)
        self.open_rescale = [(channels, self._tensor(1.0 / (1.0 - alpha_vector[channels])))
                             for channels, _ in self.held if np.any(alpha_vector[channels] > 0)]
        readout = program.group(program.readout_group)
        self.readout, self.readout_scale = slice(readout.offset, readout.stop), readout.voltage_scale
        self.injections = [(slice(program.group(part.group).offset, program.group(part.group).stop),
                            self._tensor(part.matrix.T), part.kind) for part in program.injections]
        table = program.static_table
        self.static_times = table.times
        self.static_constants = {name: self._tensor(vector) for name, vector in table.constants.items()}
        self.static_tables = {name: self._tensor(matrix) for name, matrix in table.time_tables.items()}
        self.open_iterations = program.open_iterations

    def _optics(self, manifest: dict) -> None:
        section = manifest["aoc"]
        transmissions = realised_transmissions(self.bundle)
        # Bundle images are [module, input port, output port]; the physics takes [module, output, input].
        self.positive = self._tensor(np.transpose(transmissions["positive"], (0, 2, 1)))
        self.negative = self._tensor(np.transpose(transmissions["negative"], (0, 2, 1)))
        modules, ports = self.positive.shape[0], self.positive.shape[1]
        self.modules, self.ports = modules, ports
        self.beta = self._tensor(self.bundle.array(section["beta"]))
        input_channel = input_port_channels(self.bundle, modules, ports, unused=self.size)  # `size` reads a zero
        output_channel = np.full((modules, ports), self.size, dtype=np.int64)
        port_class = np.zeros((modules, ports), dtype=np.int64)
        for tile in section["tiles"]:
            module = tile["module"]
            outputs = slice(tile["output_port_start"],
                            tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            output_channel[module, outputs] = tile_channels(self.bundle, tile)
            port_class[module, outputs] = SCALE_CLASSES.index(tile["scale_class"])
        self.input_channel = torch.as_tensor(input_channel, device=self.device)  # [M, P]
        compensation = section.get("sigma_compensation") if self.calibration is None else None
        per_port = None
        if compensation:
            # The images hold T·k for the σ shape they were compiled for (sigma_shape.py) and the stored
            # transmissions are T, what the program means: the device effects act on what is loaded, T·k.
            per_port = self._tensor(port_scales(self.bundle.array(compensation["output_scale"]), input_channel))
            self.positive, self.negative = (self.positive * per_port[:, None, :],
                                            self.negative * per_port[:, None, :])
        self.output_channel = torch.as_tensor(output_channel, device=self.device)
        self.port_class = torch.as_tensor(port_class, device=self.device)
        generator = torch.Generator().manual_seed(self.seed)
        if self.calibration is None:
            self.static_errors = sample_static_errors(self.nonidealities, modules, ports, generator, self.dtype)
        else:
            self.static_errors = measured_static_errors(self.calibration, self.nonidealities, modules, ports,
                                                        generator, self.dtype)
        self.static_errors = type(self.static_errors)(**{
            name: value.to(self.device) for name, value in vars(self.static_errors).items()})
        # The optics of every module as one signed matrix [M, P_out, P_in], every path effect folded in.
        self.optics = module_matrices(self.positive, self.negative, self.nonidealities, self.static_errors)
        if per_port is not None and not self.nonidealities.nonlinearity.enabled:
            # σ = tanh: the drive the images were compiled for is tanh/k (k·s ≈ tanh); linear in the drive,
            # so it scales the optics' columns. Every effect off, this is the ideal program again.
            self.optics = self.optics / per_port[:, None, :]
        self.chain = None
        if self.calibration is not None:
            self.chain = MachineChain.of(self.bundle, self.calibration, self.nonidealities)
