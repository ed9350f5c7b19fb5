"""Physics of one analog optical computer (AOC) loop iteration, batched in torch.

Requires torch tensors of one floating dtype. Shapes: a module has ``ports`` input ports (micro-LEDs) and
``ports`` photodetectors; a tile programmed on it uses the first ``P_out`` detectors and ``P_in`` LEDs.
Transmissions are indexed ``[module, output port, input port]`` and are the realised SLM weights per optical
path in [0, 1], darkness already subtracted (the ideal compiler view, W = T+ - T-).

Guarantees:
  * with every non-ideality disabled, :func:`optical_outputs` is exactly (T+ - T-) @ drive and
    :func:`loop_iteration` is exactly ``alpha z + beta (T+ - T-) tanh(z) + v``;
  * static device errors are drawn once by :func:`sample_static_errors`, always all of them in one fixed
    order, so a seed fixes every draw and switching one effect on or off never changes the others' values;
  * randomness comes only from the ``torch.Generator`` passed in.

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

The loop (one dense module):
  z' = sat(alpha z + beta (1 + gain_error) g(sigma(z)) + offsets + clip(v) + noise),
and in continuous time tau dz/dt = -z + (the same right-hand side), tau = 1 / (2 pi f_3dB).
Saturation clamps the state at every iteration (the integrator's output stage cannot leave its rails), where
the reference twin applies it to the read-out only; inside the rails the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from admc.core.errors import AdmcError
from admc.targets.aoc.nonidealities import (  # noqa: F401 (re-exported: the physics' vocabulary)
    GainError,
    InjectionClip,
    InputEfficiency,
    NonIdealities,
    Nonlinearity,
    Offsets,
    PbsCrosstalk,
    PdCrosstalk,
    ReadNoise,
    Saturation,
    SlmDarkness,
    WeightError,
)

Scalar = float | torch.Tensor


@dataclass(frozen=True)
class StaticErrors:
    """Per-device quantities drawn once. Shapes [modules, ports] or [modules, ports, ports] ([m, out, in]).

    Values are stored as drawn from the non-idealities' parameters whether or not the effect is enabled; the
    ``enabled`` switches decide at use. A leading module size of 1 broadcasts over any number of modules.
    """

    weight_factor_positive: torch.Tensor
    weight_factor_negative: torch.Tensor
    darkness_positive: torch.Tensor
    darkness_negative: torch.Tensor
    input_efficiency_positive: torch.Tensor
    input_efficiency_negative: torch.Tensor
    crosstalk_to_earlier: torch.Tensor
    crosstalk_to_later: torch.Tensor
    pbs_leakage_positive: torch.Tensor
    pbs_leakage_negative: torch.Tensor
    offsets: torch.Tensor
    gain_factor: torch.Tensor

    def module(self, index: int) -> StaticErrors:
        """The errors of one module, keeping a module axis of size 1."""
        sliced = {item.name: getattr(self, item.name)[index : index + 1] for item in fields(self)}
        return StaticErrors(**sliced)

    def with_values(self, **changes: torch.Tensor) -> StaticErrors:
        return replace(self, **changes)


def _efficiency_profile(
    settings: InputEfficiency, modules: int, ports: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    # Measured fan-in efficiency is low at both array edges and peaks mid-array (calibrations/FIELDS.md §5); a half
    # sine with a small random centre shift per module reproduces that smoothly between minimum and maximum.
    shift = (torch.rand(modules, 1, generator=generator, dtype=dtype) - 0.5) * 0.1
    position = (torch.arange(ports, dtype=dtype) + 0.5) / ports
    shape = torch.sin(math.pi * (position + shift).clamp(0.0, 1.0))
    profile = settings.minimum + (settings.maximum - settings.minimum) * shape
    for channel in settings.dead_channels:
        if 0 <= channel < ports:
            profile[:, channel] = 0.0
    return profile


def _crosstalk_profile(
    settings: PdCrosstalk, modules: int, ports: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    # Crosstalk is ~0.2-0.3 at the array ends and a few percent mid-array (calibrations/FIELDS.md); decay ~ports/16.
    index = torch.arange(ports, dtype=dtype)
    distance_to_end = torch.minimum(index, ports - 1 - index)
    width = max(ports / 16.0, 1.0)
    excess = settings.edge_ratio - settings.middle_ratio
    base = settings.middle_ratio + excess * torch.exp(-distance_to_end / width)
    jitter = 0.8 + 0.4 * torch.rand(modules, ports, generator=generator, dtype=dtype)
    return base * jitter


def sample_static_errors(
    nonidealities: NonIdealities,
    modules: int,
    ports: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> StaticErrors:
    """Draw every static per-device quantity once (generator default: seeded from ``nonidealities.seed``)."""
    if generator is None:
        generator = torch.Generator().manual_seed(nonidealities.seed)
    settings = nonidealities

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=dtype)

    # Fixed draw order: the realisation of one effect never depends on which others are enabled.
    weight_std = settings.weight_error.relative_std
    weight_factor_positive = 1.0 + weight_std * normal(modules, ports, ports)
    weight_factor_negative = 1.0 + weight_std * normal(modules, ports, ports)
    # Per-column darkness spreads about x0.5-x1.5 around its mean in the measured machine (calibrations/FIELDS.md).
    floor = settings.slm_darkness.floor
    darkness_positive = floor * uniform(0.5, 1.5, modules, ports)
    darkness_negative = floor * uniform(0.5, 1.5, modules, ports)
    efficiency = settings.input_efficiency
    input_efficiency_positive = _efficiency_profile(efficiency, modules, ports, generator, dtype)
    input_efficiency_negative = _efficiency_profile(efficiency, modules, ports, generator, dtype)
    crosstalk_to_earlier = _crosstalk_profile(settings.pd_crosstalk, modules, ports, generator, dtype)
    crosstalk_to_later = _crosstalk_profile(settings.pd_crosstalk, modules, ports, generator, dtype)
    leakage = settings.pbs_crosstalk.leakage
    pbs_leakage_positive = leakage * uniform(0.5, 1.5, modules, ports)
    pbs_leakage_negative = leakage * uniform(0.5, 1.5, modules, ports)
    offsets = settings.offsets.std * normal(modules, ports)
    gain_factor = 1.0 + settings.gain_error.relative_std * normal(modules, ports)
    return StaticErrors(
        weight_factor_positive=weight_factor_positive,
        weight_factor_negative=weight_factor_negative,
        darkness_positive=darkness_positive,
        darkness_negative=darkness_negative,
        input_efficiency_positive=input_efficiency_positive,
        input_efficiency_negative=input_efficiency_negative,
        crosstalk_to_earlier=crosstalk_to_earlier,
        crosstalk_to_later=crosstalk_to_later,
        pbs_leakage_positive=pbs_leakage_positive,
        pbs_leakage_negative=pbs_leakage_negative,
        offsets=offsets,
        gain_factor=gain_factor,
    )


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


def _as_experiments(state: torch.Tensor, transmission: torch.Tensor) -> tuple[torch.Tensor, bool]:
    # A single [P_out, P_in] matrix is one experiment; give the state an experiment axis to match.
    if transmission.ndim == 2:
        return state.unsqueeze(-2), True
    return state, False


def relaxed_operator(
    state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    module: int = 0,
) -> torch.Tensor:
    """Noise-free F(z) = alpha z + beta (1 + gain_error) g(sigma(z)) + offsets + clip(v), one dense module.

    ``state`` is [..., E, P] with transmissions [E, P, P] (E weight sets programmed on the same module, e.g.
    calibration experiments), or [..., P] with transmissions [P, P]. alpha, beta broadcast to [E, P].
    """
    state, squeeze = _as_experiments(state, transmission_positive)
    positive = transmission_positive if not squeeze else transmission_positive.unsqueeze(0)
    negative = transmission_negative if not squeeze else transmission_negative.unsqueeze(0)
    experiments, ports = state.shape[-2:]
    errors = static_errors.module(module)
    drive = activation(state, nonidealities).reshape(-1, experiments, ports)
    optical = optical_outputs(drive, positive, negative, nonidealities, errors).reshape(state.shape)
    if nonidealities.gain_error.enabled:
        optical = optical * errors.gain_factor[0, :ports]
    injected = torch.as_tensor(injection, dtype=state.dtype)
    if squeeze and injected.ndim > 0:
        injected = injected.unsqueeze(-2)
    result = alpha * state + beta * optical + clip_injection(injected, nonidealities)
    if nonidealities.offsets.enabled:
        result = result + errors.offsets[0, :ports]
    return result.squeeze(-2) if squeeze else result


def _read_noise(
    like: torch.Tensor, nonidealities: NonIdealities, generator: torch.Generator | None
) -> torch.Tensor:
    if generator is None:
        raise AdmcError("read noise is enabled: pass a torch.Generator so the noise is reproducible")
    noise = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return nonidealities.read_noise.std * noise


def loop_iteration(
    state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    generator: torch.Generator | None = None,
    module: int = 0,
) -> torch.Tensor:
    """One discrete relaxed iteration z' = sat(F(z) + read noise) of a single dense module (shapes as
    :func:`relaxed_operator`); read noise is white, N(0, std^2) per channel and iteration."""
    update = relaxed_operator(
        state, transmission_positive, transmission_negative, alpha, beta, injection,
        nonidealities, static_errors, module,
    )
    if nonidealities.read_noise.enabled:
        update = update + _read_noise(update, nonidealities, generator)
    return apply_saturation(update, nonidealities)


@dataclass(frozen=True)
class Acquisition:
    """Timing of one analog solve and its readout (paper: 5 MHz bandwidth, 90 samples at 4.6875 MHz,
    readout averaged over 68-93 % of the solve and over 5 repeats)."""

    bandwidth_hz: float = 5e6
    sample_rate_hz: float = 4.6875e6
    samples: int = 90
    window: tuple[float, float] = (0.68, 0.93)
    repeats: int = 5
    substeps_per_sample: int | None = None  # default: sub-step no longer than tau / 2

    @property
    def time_constant(self) -> float:
        return 1.0 / (2.0 * math.pi * self.bandwidth_hz)

    def window_sample_indices(self) -> list[int]:
        """1-based indices s of the samples at time s / f_s that fall inside the readout window."""
        start, stop = self.window
        return [s for s in range(1, self.samples + 1) if start * self.samples <= s <= stop * self.samples]

    def substeps(self) -> int:
        if self.substeps_per_sample is not None:
            return self.substeps_per_sample
        return math.ceil((1.0 / self.sample_rate_hz) / (self.time_constant / 2.0))


def continuous_time_solve(
    initial_state: torch.Tensor,
    transmission_positive: torch.Tensor,
    transmission_negative: torch.Tensor,
    alpha: Scalar,
    beta: Scalar,
    injection: torch.Tensor | float,
    nonidealities: NonIdealities,
    static_errors: StaticErrors,
    generator: torch.Generator | None = None,
    acquisition: Acquisition | None = None,
    module: int = 0,
) -> torch.Tensor:
    """Integrate tau dz/dt = -z + F(z) + n(t) and return the windowed, repeat-averaged readout.

    Exponential Euler with a fixed sub-step: exact for the -z relaxation under a forcing held over the
    sub-step, and its fixed point is exactly F's. Read noise n(t) is white at the digitiser's sample rate:
    one N(0, std^2) value per channel held for each sample period, so the loop low-passes it as the analog
    integrator does. Saturation clamps the state after every sub-step. Shapes as :func:`relaxed_operator`;
    the result has the shape of ``initial_state``.
    """
    acquisition = acquisition or Acquisition()
    substeps = acquisition.substeps()
    step = (1.0 / acquisition.sample_rate_hz) / substeps
    decay = math.exp(-step / acquisition.time_constant)
    window = set(acquisition.window_sample_indices())
    if not window:
        raise AdmcError("continuous_time_solve: the readout window holds no sample")
    state = initial_state.unsqueeze(0).expand(acquisition.repeats, *initial_state.shape).clone()
    total = torch.zeros_like(state)
    for sample in range(1, acquisition.samples + 1):
        forcing_noise: torch.Tensor | float = 0.0
        if nonidealities.read_noise.enabled:
            forcing_noise = _read_noise(state, nonidealities, generator)
        for _ in range(substeps):
            target = relaxed_operator(
                state, transmission_positive, transmission_negative, alpha, beta, injection,
                nonidealities, static_errors, module,
            )
            state = apply_saturation(decay * state + (1.0 - decay) * (target + forcing_noise), nonidealities)
        if sample in window:
            total = total + state
    return (total / len(window)).mean(dim=0)
