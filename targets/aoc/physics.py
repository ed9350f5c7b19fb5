"""Physics of one analog optical computer (AOC) loop iteration, batched in torch.

Requires torch tensors of one floating dtype. Shapes: a module has ``ports`` input ports (micro-LEDs) and
``ports`` photodetectors; a tile programmed on it uses the first ``P_out`` detectors and ``P_in`` LEDs.
Transmissions are indexed ``[module, output port, input port]`` and are the realised SLM weights per optical
path in [0, 1], darkness already subtracted (the ideal compiler view, W = T+ - T-).

Guarantees:
  * with every non-ideality disabled, :func:`optical_outputs` is exactly (T+ - T-) @ drive, and
    :func:`module_matrices` is exactly T+ - T-;
  * every optical effect is linear in the drive, so :func:`module_matrices` folds them into one matrix per module;
  * nothing random happens here: the static device errors are drawn once (``static_errors.py``).

Physical model of the optical part (order as in the 48-variable machine, calibrations/FIELDS.md section 1):
  1. LED drive d_i (already through the sigmoid), fan-in efficiency per path: x+-_i = rho+-_i d_i.
  2. Finite contrast: a pixel set to T transmits floor_j + (1 - floor_j) T, with floor_j the darkness of
     output column j on that path (calibrations/FIELDS.md: one darkness constant per column and path).
  3. Static weight error: the realised transmission is multiplied per pixel by (1 + epsilon), clipped to
     [0, 1].
  4. Optical product y+-_j = sum_i tau+-_ji x+-_i.
  5. PBS leakage: unmodulated source light of the same path reaches the index-aligned detector,
     y+-_j += p+-_j x+-_j (calibrations/FIELDS.md, 48-variable machine).
  6. Differential detection g = y+ - y-, then photodiode neighbour crosstalk as the tridiagonal matrix
     g_j <- g_j + E_{j+1} g_{j+1} + L_{j-1} g_{j-1} on the tile's output ports (spill out of the tile is
     lost).
     The same ratios act on both paths, so applying them after the difference is identical.
  Darkness model: the detector subtracts a per-column *constant* (the darkness at zero drive); the drive here
  is the DC-removed LED signal, so that constant is already gone and what remains of the darkness is the
  drive-dependent leak floor_j * sum_i rho_i d_i on each path. It cancels in the differential signal only
  where both paths' floors and efficiencies agree, and the (1 - floor) contrast compression stays.

Around the optics: the LED drive sigma (:func:`activation`, tanh or the measured algebraic sigmoid), the input
clip of the injected vector and the output stage's saturation. The loop of one dense module that puts them
together is ``single_module.py``; the twin's loop over placed modules is ``twin.py``.
"""

from __future__ import annotations

import torch

from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.static_errors import StaticErrors


def _path_signal(
    drive: torch.Tensor,
    transmission: torch.Tensor,
    darkness: torch.Tensor,
    weight_factor: torch.Tensor,
    efficiency: torch.Tensor,
    leakage: torch.Tensor,
    nonidealities: NonIdealities,
) -> torch.Tensor:
    outputs, inputs = transmission.shape[-2:]
    if nonidealities.input_efficiency.enabled:
        drive = drive * efficiency[:, :inputs]
    realised = transmission
    if nonidealities.slm_darkness.enabled:
        floor = darkness[:, :outputs, None]
        realised = floor + (1.0 - floor) * realised
    if nonidealities.weight_error.enabled:
        realised = (realised * weight_factor[:, :outputs, :inputs]).clamp(0.0, 1.0)
    signal = torch.einsum("mpq,bmq->bmp", realised, drive)
    if nonidealities.pbs_crosstalk.enabled:
        aligned = min(outputs, inputs)
        leak = leakage[:, :aligned] * drive[..., :aligned]
        signal = signal + torch.nn.functional.pad(leak, (0, outputs - aligned))
    return signal


def apply_pd_crosstalk(
    signal: torch.Tensor, to_earlier: torch.Tensor, to_later: torch.Tensor
) -> torch.Tensor:
    """g_j + E_{j+1} g_{j+1} + L_{j-1} g_{j-1} on the last axis; ratios are [modules, >= ports]."""
    outputs = signal.shape[-1]
    earlier = to_earlier[:, :outputs]
    later = to_later[:, :outputs]
    from_next = torch.nn.functional.pad((earlier * signal)[..., 1:], (0, 1))
    from_previous = torch.nn.functional.pad((later * signal)[..., :-1], (1, 0))
    return signal + from_next + from_previous


def optical_outputs(
    drive: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
) -> torch.Tensor:
    """Differential photodetector signal [B, M, P_out] for LED drives [B, M, P_in] and transmissions
    [M, P_out, P_in] per path; see the module docstring for the model. Static errors broadcast from M = 1."""
    errors = static_errors
    positive = _path_signal(
        drive, transmission_positive, errors.darkness_positive, errors.weight_factor_positive,
        errors.input_efficiency_positive, errors.pbs_leakage_positive, nonidealities,
    )
    negative = _path_signal(
        drive, transmission_negative, errors.darkness_negative, errors.weight_factor_negative,
        errors.input_efficiency_negative, errors.pbs_leakage_negative, nonidealities,
    )
    difference = positive - negative
    if nonidealities.pd_crosstalk.enabled:
        difference = apply_pd_crosstalk(difference, errors.crosstalk_to_earlier, errors.crosstalk_to_later)
    return difference


def module_matrices(
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
) -> torch.Tensor:
    """The optical part of each module as one signed matrix A [M, P_out, P_in]: optical_outputs(d) = A @ d.

    Requires transmissions [M, P_out, P_in] and static errors for M modules (or broadcasting from 1).
    Guarantees: every effect of :func:`optical_outputs` (fan-in efficiency, darkness, weight error, PBS leakage,
    differential detection, PD crosstalk) is linear in the drive, so A is built by applying it to the unit
    drives and reproduces it exactly up to rounding; with every effect off, A = T+ - T- exactly.
    """
    modules, _, inputs = transmission_positive.shape
    basis = torch.eye(inputs, dtype=transmission_positive.dtype, device=transmission_positive.device)
    drives = basis.unsqueeze(1).expand(inputs, modules, inputs)  # drive b is the unit vector e_b on every module
    columns = optical_outputs(drives, transmission_positive, transmission_negative, nonidealities, static_errors)
    return columns.permute(1, 2, 0).contiguous()  # [input b, module, output] -> [module, output, input b]


def activation(z: torch.Tensor, nonidealities: NonIdealities) -> torch.Tensor:
    """tanh, or the measured algebraic sigmoid z / (1 + |z|^c)^(1/c) (unit slope at 0, limits +-1).

    Guarantees: a new tensor; ``z`` is not modified (the sigmoid's intermediates are computed in place).
    """
    if not nonidealities.nonlinearity.enabled:
        return torch.tanh(z)
    exponent = nonidealities.nonlinearity.exponent
    if z.requires_grad:
        return z / (1.0 + z.abs() ** exponent) ** (1.0 / exponent)
    return activation_(z.clone(), nonidealities)


def activation_(z: torch.Tensor, nonidealities: NonIdealities, work: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`activation` computed in place in ``z`` (returned); ``work`` (shape of z) holds the sigmoid's
    intermediate when given, else one is allocated. No autograd."""
    if not nonidealities.nonlinearity.enabled:
        return z.tanh_()
    exponent = nonidealities.nonlinearity.exponent
    factor = torch.abs(z, out=work) if work is not None else z.abs()
    # (1 + |z|^c)^(-1/c) as exp(−log1p(exp(c log|z|))/c): the same value (to rounding; |z| = 0 gives 1) in
    # about 60 % of the time of two pow calls, which dominate a float64 twin iteration.
    factor.log_().mul_(exponent).exp_().log1p_().mul_(-1.0 / exponent).exp_()
    return z.mul_(factor)


def apply_saturation(z: torch.Tensor, nonidealities: NonIdealities) -> torch.Tensor:
    """Clamp the state voltage to the output stage's rails when saturation is enabled."""
    if not nonidealities.saturation.enabled:
        return z
    return z.clamp(nonidealities.saturation.low, nonidealities.saturation.high)


def clip_injection(injection: torch.Tensor, nonidealities: NonIdealities) -> torch.Tensor:
    """Clip the injected vector to +-limit (the machine's input range) when enabled."""
    if not nonidealities.injection_clip.enabled:
        return injection
    limit = nonidealities.injection_clip.limit
    return injection.clamp(-limit, limit)
