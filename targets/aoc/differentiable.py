"""A differentiable AOC twin for hardware-aware fine-tuning of ADM-form models (docs/design.md §6, paper Eq. 7).

The bundle twin (:mod:`admc.targets.aoc.twin`) executes a built program in float64 without gradients. This
module runs the *source* ADM-form network the way the AOC would compute it, in torch with autograd, so a
user can fine-tune their own parameters against the hardware's non-idealities with standard
conditional flow matching, export the same module and rebuild it with ``admc build``.

Requires: an ADM-form model given as its layers ``(linear, time_vector)`` with
``L_i(h, t) = linear_i(tanh(h)) + t · time_vector_i`` (``time_vector`` may be None), chained
d → d_1 → … → d_{K-1} → d. Generic canonicalisation (:mod:`admc.passes.canonicalize`) works on numpy
arrays and is not differentiable, so other structures (standard MLPs, time-embedding subnetworks) are
refused here: write the model in ADM form (see ``examples/train_two_moons.py``) to fine-tune it.

Guarantees:
  * the wrapped layers' parameters are the module's parameters (shared, not copied): gradients and
    optimiser steps act on the user's model;
  * :meth:`HardwareAwareVelocity.forward` is Eq. 7: K applications of the ADM operator with Δt = 1 and x = 0
    injected, from pad(x), read out on block 0 — with every non-ideality off and no quantisation it equals
    the wrapped model's velocity (to rounding);
  * :meth:`HardwareAwareVelocity.implicit_step` runs the closed loop of an implicit-Euler step for a fixed
    number of iterations with autograd through every iteration;
  * non-idealities, all in the hardware's voltage units through per-block voltage scales (the backend's
    state scaling; default 1): the measured sigmoid instead of tanh, per-weight static multiplicative
    weight error with the transmission clipped to full scale, per-channel gain error and offsets, the
    injection clip, white read noise per application (training mode only), and the saturation clamp;
    SLM quantisation is applied row-wise (W / max|W| per row, sign split, nearest grey level of the
    measured response) with a straight-through estimator: quantised values forward, identity gradient;
  * static errors are drawn once from a seeded generator at construction (fixed across calls, redrawn only
    by :meth:`HardwareAwareVelocity.redraw_static_errors`); read noise comes from a ``torch.Generator``
    owned by the module; the same seed gives the same outputs.

Not modelled (the bundle twin has them): the α-relaxation (it keeps the fixed points, changes only noise
filtering), SLM darkness, input efficiency, crosstalk, rows split across tiles (quantisation is per whole
row here, per tile row on the machine), continuous time, windowed and repeated readout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.targets.aoc.physics import NonIdealities, activation
from admc.targets.aoc.slm import grey_level_weights
from admc.targets.loader import load_target

AdmLayerSpec = tuple[torch.nn.Linear, "torch.nn.Parameter | torch.Tensor | None"]
LINEAR_RESPONSE = (0.0, 1.0, 0.0)
PROBE_BATCH = 16
PROBE_SEED = 0


@dataclass(frozen=True)
class SlmQuantisation:
    """SLM grey levels of the two optical paths: bit depth and response [a, b, c] per path."""

    bit_depth: int
    response_positive: tuple[float, float, float] = LINEAR_RESPONSE
    response_negative: tuple[float, float, float] = LINEAR_RESPONSE

    @classmethod
    def from_target(cls, target: str | Path = "aoc-48") -> SlmQuantisation | None:
        """The target's SLM (None when its weights are float, i.e. not quantised)."""
        description = _aoc_target(target)
        slm = description.slm
        if slm.float_weights:
            return None
        return cls(int(slm.bit_depth), tuple(slm.response_for("positive")), tuple(slm.response_for("negative")))

    def levels(self, path: str, dtype: torch.dtype) -> torch.Tensor:
        """Realised weight of every grey level of one path ('positive' or 'negative'), increasing."""
        response = self.response_positive if path == "positive" else self.response_negative
        return torch.as_tensor(grey_level_weights(response, self.bit_depth), dtype=dtype)


def _aoc_target(target: str | Path):
    description = load_target(target)
    if description.kind != "aoc":
        raise AdmcError(f"differentiable twin: target {target!s} is of kind {description.kind!r}, expected 'aoc'")
    return description


def nonidealities_of_target(target: str | Path = "aoc-48") -> NonIdealities:
    """The non-idealities section of an AOC target description (a preset name or a YAML path)."""
    return NonIdealities.from_mapping(_aoc_target(target).to_dict()["nonidealities"])


def nearest_level(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each entry of ``values`` (in [0, 1]) replaced by the nearest of the increasing ``levels``.

    Guarantees: the same choice as :func:`admc.targets.aoc.slm.quantise` (ties go to the lower level).
    """
    upper = torch.searchsorted(levels, values.contiguous(), side="left").clamp(1, levels.numel() - 1)
    lower = upper - 1
    choose_upper = (levels[upper] - values) < (values - levels[lower])
    return levels[torch.where(choose_upper, upper, lower)]


def quantise_rows(weight: torch.Tensor, quantisation: SlmQuantisation) -> torch.Tensor:
    """Row-wise SLM quantisation of a [rows, columns] matrix (no gradient).

    Each row is scaled by its max |w| (the channel gain β takes the scale), sign split, each part snapped
    to the nearest grey level of its path, and scaled back. Zero rows stay zero.
    """
    with torch.no_grad():
        scale = weight.abs().amax(dim=1, keepdim=True)
        safe_scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        normalised = (weight / safe_scale).clamp(-1.0, 1.0)
        positive = nearest_level(normalised.clamp_min(0.0), quantisation.levels("positive", weight.dtype))
        negative = nearest_level((-normalised).clamp_min(0.0), quantisation.levels("negative", weight.dtype))
        return (positive - negative) * scale


def straight_through(value: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
    """``replacement`` in the forward pass, the identity gradient to ``value`` in the backward pass."""
    return value + (replacement - value).detach()


def adm_layers_of(model: torch.nn.Module) -> list[AdmLayerSpec]:
    """The ``(linear, time_vector)`` pairs of a module shaped like ``examples/train_two_moons.AdmMlp``.

    Requires: ``model.layers`` is a ModuleList whose entries have ``.linear`` (``torch.nn.Linear``) and
    optionally ``.time`` (a parameter or tensor of the layer's output size, or None).
    Guarantees: the returned objects are the model's own (shared); anything else raises AdmcError.
    """
    name = type(model).__name__
    layers = getattr(model, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise AdmcError(
            f"differentiable twin: {name} has no non-empty 'layers' ModuleList; the differentiable twin takes "
            "ADM-form models (layers with .linear and .time, L_i(h, t) = linear(tanh(h)) + t·time). Generic "
            "canonicalisation is numpy-only and not differentiable: rewrite the model in ADM form, or pass "
            "its layers to HardwareAwareVelocity.from_adm_layers"
        )
    pairs = []
    for index, layer in enumerate(layers):
        linear = getattr(layer, "linear", None)
        if not isinstance(linear, torch.nn.Linear):
            raise AdmcError(
                f"differentiable twin: {name}.layers[{index}] ({type(layer).__name__}) has no torch.nn.Linear "
                "'linear' attribute; only ADM-form layers L(h, t) = linear(tanh(h)) + t·time are supported"
            )
        pairs.append((linear, getattr(layer, "time", None)))
    return pairs


def _check_chain(layers: Sequence[AdmLayerSpec]) -> None:
    for index, (linear, time_vector) in enumerate(layers):
        if not isinstance(linear, torch.nn.Linear):
            raise AdmcError(f"differentiable twin: layer {index} is {type(linear).__name__}, not torch.nn.Linear")
        if time_vector is not None and tuple(time_vector.shape) != (linear.out_features,):
            raise AdmcError(f"differentiable twin: layer {index} time vector has shape {tuple(time_vector.shape)}, "
                            f"expected ({linear.out_features},)")
        following = layers[(index + 1) % len(layers)][0]
        if linear.out_features != following.in_features:
            what = "the first layer's input (the state)" if index == len(layers) - 1 else f"layer {index + 1}"
            raise AdmcError(f"differentiable twin: layer {index} has {linear.out_features} outputs but "
                            f"{what} takes {following.in_features}; an ADM chain maps d → … → d")


def voltage_scales_of_bundle(bundle: Bundle | str | Path) -> list[float]:
    """Per-block voltage scales (state, hidden_1, …) the AOC backend chose for a bundle built from an
    ADM-form model (direct layout: one state group per block). Raises AdmcError for other layouts."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(Path(bundle))
    groups = bundle.manifest["layout"]["groups"]
    roles = [group["role"] for group in groups]
    if not roles or roles[0] != "state" or any(role != "hidden" for role in roles[1:]):
        raise AdmcError(f"bundle {bundle.path}: layout groups {roles} are not "
                        "the direct ADM layout (state, hidden_1, …); voltage scales cannot be mapped to blocks")
    return [float(group["voltage_scale"]) for group in groups]


class HardwareAwareVelocity(torch.nn.Module):
    """The velocity f(x, t) of an ADM-form model as the AOC computes it (Eq. 7), differentiable.

    Requires: layers forming an ADM chain d → … → d (see the module docstring), all of one floating dtype;
    ``voltage_scales`` (one per block: state, then each hidden layer's output) positive, default all 1.
    Guarantees: see the module docstring. ``train()`` mode adds read noise (when enabled), ``eval()`` mode
    does not; static errors, quantisation and the deterministic effects act in both modes.
    """

    def __init__(self, layers: Sequence[AdmLayerSpec], nonidealities: NonIdealities | None = None, *,
                 quantisation: SlmQuantisation | None | str = "target", target: str | Path = "aoc-48",
                 voltage_scales: Sequence[float] | None = None, seed: int | None = None):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise AdmcError("differentiable twin: an ADM chain needs at least one layer")
        _check_chain(layers)
        self.linears = torch.nn.ModuleList(linear for linear, _ in layers)
        self.time_vectors = [time_vector for _, time_vector in layers]
        for index, time_vector in enumerate(self.time_vectors):
            if isinstance(time_vector, torch.nn.Parameter):
                self.register_parameter(f"time_vector_{index}", time_vector)
        self.nonidealities = nonideal = nonidealities if nonidealities is not None else nonidealities_of_target(target)
        self.quantisation = SlmQuantisation.from_target(target) if quantisation == "target" else quantisation
        self.voltage_scales = self._checked_scales(voltage_scales)
        self.seed = nonideal.seed if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.redraw_static_errors(self.seed)

    @classmethod
    def from_adm_layers(cls, layers: Sequence[AdmLayerSpec], **options) -> HardwareAwareVelocity:
        """Wrap explicit ``(linear, time_vector)`` layers; options as the constructor's."""
        return cls(layers, **options)

    @classmethod
    def from_module(cls, model: torch.nn.Module, *, check_forward: bool = True, **options) -> HardwareAwareVelocity:
        """Wrap a module with ADM-form ``layers`` (like ``AdmMlp``); options as the constructor's.

        With ``check_forward``, the module's own ``forward(x, t)`` is compared on a seeded probe batch with
        the ideal ADM chain of its layers and the module is refused (AdmcError) when they differ, so a
        module whose forward is not the ADM form is never silently fine-tuned as if it were.
        """
        twin = cls(adm_layers_of(model), **options)
        if check_forward:
            twin.check_matches(model)
        return twin

    # -- set-up ----------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.linears[0].weight.dtype

    @property
    def state_dimension(self) -> int:
        return self.linears[0].in_features

    @property
    def block_sizes(self) -> list[int]:
        """Channels per block: block 0 the state (d), block i the output of layer i."""
        return [self.linears[-1].out_features] + [linear.out_features for linear in self.linears[:-1]]

    def _checked_scales(self, voltage_scales: Sequence[float] | None) -> list[float]:
        count = len(self.linears)
        if voltage_scales is None:
            return [1.0] * count
        scales = [float(value) for value in voltage_scales]
        if len(scales) != count or not all(np.isfinite(value) and value > 0 for value in scales):
            raise AdmcError(f"differentiable twin: voltage_scales needs {count} positive values (state, then each "
                            f"hidden block), got {list(voltage_scales)}")
        return scales

    def redraw_static_errors(self, seed: int) -> None:
        """Draw the static errors (per-weight factors, then per-channel gain factors, then offsets) from
        ``seed``, in that fixed order whichever effects are enabled."""
        generator = torch.Generator().manual_seed(int(seed))
        settings = self.nonidealities

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64).to(self.dtype)

        for index, linear in enumerate(self.linears):
            factor = 1.0 + settings.weight_error.relative_std * normal(*linear.weight.shape)
            self.register_buffer(f"weight_factor_{index}", factor, persistent=False)
        for block, size in enumerate(self.block_sizes):
            self.register_buffer(f"gain_factor_{block}", 1.0 + settings.gain_error.relative_std * normal(size),
                                 persistent=False)
        for block, size in enumerate(self.block_sizes):
            self.register_buffer(f"offset_{block}", settings.offsets.std * normal(size), persistent=False)

    def reset_noise(self, seed: int | None = None) -> None:
        """Restart the read-noise generator (default: from the module's seed)."""
        self.generator.manual_seed((self.seed if seed is None else int(seed)) + 1)

    def check_matches(self, model: torch.nn.Module, tolerance: float = 1e-5) -> None:
        """Raise AdmcError unless ``model(x, t)`` equals the ideal ADM chain of the wrapped layers."""
        generator = torch.Generator().manual_seed(PROBE_SEED)
        x = torch.randn(PROBE_BATCH, self.state_dimension, generator=generator, dtype=torch.float64).to(self.dtype)
        t = torch.rand(PROBE_BATCH, generator=generator, dtype=torch.float64).to(self.dtype)
        with torch.no_grad():
            try:
                theirs = model(x, t)
            except Exception as error:  # any failure means the module is not an (x, t) -> velocity model
                raise AdmcError(f"differentiable twin: {type(model).__name__}(x, t) failed on a probe batch: "
                                f"{error}") from error
            ours = self.ideal_velocity(x, t)
        if not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape:
            raise AdmcError(f"differentiable twin: {type(model).__name__}(x, t) does not return a [B, d] velocity")
        scale = float(ours.abs().max().clamp_min(1.0))
        error = float((theirs - ours).abs().max())
        if not error <= tolerance * scale:
            raise AdmcError(
                f"differentiable twin: {type(model).__name__}.forward differs from the ADM chain of its layers "
                f"(max |difference| {error:.3g}); its forward must be L_K ∘ … ∘ L_1 with "
                "L_i(h, t) = linear_i(tanh(h)) + t·time_i"
            )

    # -- the operator ----------------------------------------------------------------------------
    def ideal_velocity(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """f(x, t) = L_K ∘ … ∘ L_1 (x) with exact tanh and weights: the digital model, no hardware."""
        time = self._time_column(t, x)
        h = x
        for linear, time_vector in zip(self.linears, self.time_vectors, strict=True):
            h = linear(torch.tanh(h))
            if time_vector is not None:
                h = h + time * time_vector
        return h

    def realised_weight(self, index: int) -> torch.Tensor:
        """Layer ``index``'s weight as the SLM realises it: quantised (straight-through), times the static
        per-weight factor with the transmission clipped to full scale (|w| ≤ the row's max |w|)."""
        weight = self.linears[index].weight
        if self.quantisation is not None:
            weight = straight_through(weight, quantise_rows(weight, self.quantisation))
        if self.nonidealities.weight_error.enabled:
            limit = weight.abs().amax(dim=1, keepdim=True)
            weight = torch.minimum(torch.maximum(weight * getattr(self, f"weight_factor_{index}"), -limit), limit)
        return weight

    def _time_column(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        time = torch.as_tensor(t, dtype=x.dtype)
        if time.ndim == 0:
            return time.expand(x.shape[0], 1)
        return time.reshape(x.shape[0], 1)

    def _injection(self, block: int, time: torch.Tensor, delta: float) -> torch.Tensor:
        """b + t·e of the layer feeding ``block`` (scaled by Δt in block 0)."""
        layer = len(self.linears) - 1 if block == 0 else block - 1
        linear, time_vector = self.linears[layer], self.time_vectors[layer]
        value = linear.bias.expand(time.shape[0], -1) if linear.bias is not None else torch.zeros(
            time.shape[0], linear.out_features, dtype=time.dtype)
        if time_vector is not None:
            value = value + time * time_vector
        return delta * value if block == 0 else value

    def _block_update(self, block: int, source: torch.Tensor, injected: torch.Tensor, weight: torch.Tensor,
                      scale: float, delta: float) -> torch.Tensor:
        """One block's new value in model units: sat(Δt·gain·W σ(source) + clip(v) + offsets + noise)."""
        settings = self.nonidealities
        optical = torch.nn.functional.linear(activation(source, settings), weight)
        if settings.gain_error.enabled:
            optical = optical * getattr(self, f"gain_factor_{block}")
        if block == 0:
            optical = delta * optical
        if settings.injection_clip.enabled:
            limit = settings.injection_clip.limit / scale
            injected = injected.clamp(-limit, limit)
        update = optical + injected
        if settings.offsets.enabled:
            update = update + getattr(self, f"offset_{block}") / scale
        if settings.read_noise.enabled and self.training:
            noise = torch.randn(update.shape, generator=self.generator, dtype=torch.float64).to(update.dtype)
            update = update + (settings.read_noise.std / scale) * noise
        if settings.saturation.enabled:
            update = update.clamp(settings.saturation.low / scale, settings.saturation.high / scale)
        return update

    def adm_operator(self, blocks: list[torch.Tensor], inject: torch.Tensor, time: torch.Tensor, delta: float,
                     weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """One application of ADM_{x,t;θ(Δt)} (Eq. 5–6) on the state as a list of K blocks, with the hardware
        effects; block i ← layer i of block i−1, block 0 ← Δt·layer K of block K−1 + x."""
        count = len(blocks)
        updated = []
        for block in range(count):
            layer = count - 1 if block == 0 else block - 1
            injected = self._injection(block, time, delta)
            if block == 0:
                injected = injected + inject
            updated.append(self._block_update(block, blocks[block - 1], injected, weights[layer],
                                              self.voltage_scales[block], delta))
        return updated

    def _padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        zeros = [x.new_zeros(x.shape[0], size) for size in self.block_sizes[1:]]
        return [x, *zeros]

    def iterate(self, x: torch.Tensor, inject: torch.Tensor, t: torch.Tensor | float, delta: float,
                iterations: int) -> torch.Tensor:
        """Block 0 after ``iterations`` applications of ADM_{inject,t;θ(delta)} started from pad(x)."""
        if iterations < 1:
            raise AdmcError(f"differentiable twin: iterations must be ≥ 1, got {iterations}")
        time = self._time_column(t, x)
        weights = [self.realised_weight(index) for index in range(len(self.linears))]
        blocks = self._padded(x)
        for _ in range(iterations):
            blocks = self.adm_operator(blocks, inject, time, delta, weights)
        return blocks[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Eq. 7: [(ADM_{x=0,t;θ(1)})^K (pad(x))]_{:d}, the hardware's velocity for training. x [B, d], t [B]."""
        return self.iterate(x, torch.zeros_like(x), t, 1.0, len(self.linears))

    def implicit_step(self, x: torch.Tensor, t: torch.Tensor | float, delta: float,
                      iterations: int) -> torch.Tensor:
        """The closed loop of one implicit-Euler step from x at time t (the loop runs at t + Δt), for a fixed
        number of iterations with autograd through all of them: approximately y = x + Δt f(y, t + Δt).

        Requires iterations ≥ K (K iterations at the loop's own time give the explicit Euler step, Eq. 9;
        more approach the fixed point when Δt is small enough to contract, Theorem 1).
        """
        time = self._time_column(t, x) + delta
        return self.iterate(x, x, time, delta, iterations)
