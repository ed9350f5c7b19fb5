"""Conditional flow matching of a compiled model's weights, through its program on the twin or digitally.

Requires: a ``CompiledModel`` and data [N, d] (float64). Guarantees: :func:`fit` minimises
E ‖v(x_t, t) − (x₁ − x₀)‖², x_t = t x₁ + (1 − t) x₀, x₀ ~ N(0, I), x₁ from the training split and t drawn
uniformly from the program's phase points (the times at which the program evaluates the velocity), with v the
program's velocity through the twin (``through="program"``; chips cycled step by step) or the source model's
own (``"digital"``, the control: same data, draws, steps and optimiser). ``objective`` "teacher" replaces the
target x₁ − x₀ by the source model's own velocity at x_t (its weights before fine-tuning): the same states, a
target without the flow-matching variance, which makes the machine compute what the source computes (the
digital control then has nothing to learn). ``objective`` "samples" fits the program's final samples instead: the
mean squared error against the source model's ideal samples from the same noise (``CompiledModel.reference_samples``,
computed once: one seeded noise per training sample, and the held-out draws' own), with the gradient through every
phase of every step of the sampler on the twin (``CompiledModel.final_samples``); the data enter only through
their conditions (a conditional model), and the digital control stays flow matching. Adam on the float64 weights;
every ``evaluate_every`` steps the loss on the held-out split (fixed draws) is measured — for a program fit
given ``rebuild``, on the program recompiled for the current weights, which the fit then continues through — the
best weights are kept and training stops after ``patience`` evaluations without improvement; the learning rate
is constant or falls to 0 at ``max_steps`` on a cosine (``schedule``); with ``rollback`` an evaluation without
improvement sends the fit back to the best weights with half the learning rate. Every draw comes from
generators seeded by ``seed``: the same call gives the same weights bit for bit. A conditional model's samples
come with their conditions (``conditions``: per split, condition input name → one value per sample), drawn with
them and passed to every velocity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from admc.core.errors import AdmcError
from admc.finetuning.objectives import FLOW_MATCHING, LEARNING_RATES, SAMPLES, TEACHER

THROUGH = ("program", "digital")
CONSTANT, COSINE = "constant", "cosine"
ROLLBACK_FACTOR = 0.5
SCHEDULES = (CONSTANT, COSINE)


@dataclass(frozen=True)
class FitSettings:
    max_steps: int = 200
    batch: int = 128
    learning_rate: float | None = None  # None: the objective's (LEARNING_RATES)
    seed: int = 0
    evaluate_every: int = 25  # a program fit rebuilds the model here: a compile per evaluation
    patience: int = 4
    holdout_batch: int = 512
    objective: str = FLOW_MATCHING
    # "cosine": the learning rate falls from its start to 0 at ``max_steps`` as (1 + cos(π k / max_steps)) / 2, so
    # the last steps between rebuilds move the weights (and what the next rebuild compiles) less.
    schedule: str = CONSTANT
    # Before each rebuild, also measure the held-out loss through the structure the fit trained through (one more
    # held-out evaluation each): how much a rebuild moves the loss (FitResult.trained_through_loss).
    record_trained_through: bool = False
    # On an evaluation without improvement, go back to the best weights (rebuilt as they were) with the learning rate
    # times ``ROLLBACK_FACTOR`` and Adam's moments cleared, instead of continuing from the worse weights: each
    # evaluation then tries the best so far again with smaller steps (early stopping still counts these).
    rollback: bool = False
    # On a measured machine, no gradient for a pixel pushed past full scale (the forward holds it there). Off by
    # default: measured on two moons hw48 (benchmarks/finetune_rebuild.py) it fits worse (NRMSE 0.0285 against 0.0258).
    hold_full_scale: bool = False


@dataclass
class FitResult:
    weights: dict[str, np.ndarray]
    steps: int
    best_step: int
    holdout_loss: list[tuple[int, float]] = field(default_factory=list)
    seconds_per_step: float = 0.0
    loop_iterations_per_step: float = 0.0
    rebuilds: int = 0  # recompilations of the tuned weights during the fit
    stopped: str | None = None  # why training stopped before early stopping or the step limit, if it did
    trained_through_loss: list[tuple[int, float]] = field(default_factory=list)  # record_trained_through
    rollbacks: int = 0  # returns to the best weights (FitSettings.rollback)


@dataclass
class Draws:
    """One batch: the noise x₀, the data x₁, each sample's phase point and (a conditional model) conditions."""

    noise: torch.Tensor
    data: torch.Tensor
    points: list
    conditions: dict = field(default_factory=dict)

    def shard(self, start: int, stop: int) -> Draws:
        """Samples ``start:stop`` of the batch."""
        return Draws(self.noise[start:stop], self.data[start:stop], self.points[start:stop],
                     {name: value[start:stop] for name, value in self.conditions.items()})


def adam(parameters: list[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """The optimiser of every fit: Adam with its multi-tensor update (a dozen operations per step for all the
    weights instead of a dozen per weight; the same arithmetic, deterministic)."""
    return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


def draw(model, data: torch.Tensor, count: int, generator: torch.Generator, conditions: dict | None = None,
         noise: torch.Tensor | None = None) -> Draws:
    """``count`` samples of the data (with replacement, with their ``conditions``), their noise and phase points;
    ``noise``: each data row's own (the samples objective's pool), else drawn afresh."""
    index = torch.randint(data.shape[0], (count,), generator=generator)
    noise = torch.randn(count, data.shape[1], generator=generator, dtype=data.dtype) if noise is None else noise[index]
    choice = torch.randint(len(model.phase_points), (count,), generator=generator).tolist()
    return Draws(noise, data[index], [model.phase_points[k] for k in choice],
                 {name: value[index] for name, value in (conditions or {}).items()})


def loss_of(model, draws: Draws, through: str, chip: int, objective: str = FLOW_MATCHING) -> torch.Tensor:
    """The loss of ``draws`` (the objective's target), through the program on chip ``chip`` or digitally. For
    ``samples`` the draws' data are the source's ideal samples from their noise (``with_reference``)."""
    if objective == SAMPLES:
        if through != "program":
            raise AdmcError("objective 'samples' fits the program's samples on the twin; the digital control is "
                            "fitted by flow matching")
        samples = model.final_samples(draws.noise, chip, **({"conditions": draws.conditions} if draws.conditions
                                                             else {}))
        return ((samples - draws.data) ** 2).mean()
    times = torch.as_tensor([point.time for point in draws.points], dtype=draws.data.dtype)[:, None]
    state = times * draws.data + (1.0 - times) * draws.noise
    given = {"conditions": draws.conditions} if draws.conditions else {}  # an unconditional model takes none
    if through == "program":
        velocity = model.velocity(state, draws.points, chip, **given)
    else:
        velocity = model.digital_velocity(state, draws.points, **given)
    if objective == TEACHER:
        with torch.no_grad():
            target = model.teacher_velocity(state, draws.points, **given)
    else:
        target = draws.data - draws.noise
    return ((velocity - target) ** 2).mean()


def with_reference(model, draws: Draws) -> Draws:
    """``draws`` with their data replaced by the source's ideal samples from their noise (the samples objective's
    targets)."""
    targets = model.reference_samples(draws.noise.numpy(), {name: value.numpy() for name, value in
                                                            draws.conditions.items()})
    return Draws(draws.noise, torch.as_tensor(targets, dtype=draws.noise.dtype), draws.points, draws.conditions)


class _Selection:
    """The held-out loss on fixed draws, measured every ``evaluate_every`` steps, and the best weights so far.
    With ``rebuild``, the model is recompiled for its current weights before each measurement, so every loss
    compared (the source's at step 0 included: its compile is its rebuild) is the rebuilt program's."""

    def __init__(self, model, fixed: Draws, through: str, settings: FitSettings, rebuild, optimiser=None,
                 scheduler=None):
        self.model, self.fixed, self.through, self.settings, self.rebuild = model, fixed, through, settings, rebuild
        self.optimiser, self.scheduler = optimiser, scheduler
        self.rollbacks = 0
        self.best, self.best_step, self.waited = self._loss(), 0, 0
        self.best_weights = self._weights()
        self.history = [(0, self.best)]
        self.trained_through: list[tuple[int, float]] = []
        self.stopped: str | None = None

    def _loss(self) -> float:
        with torch.no_grad():
            return float(loss_of(self.model, self.fixed, self.through, 0, self.settings.objective))

    def _weights(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.model.parameters.items()}

    def evaluate(self, step: int) -> bool:
        """Measure at ``step``; False when the model could not be rebuilt (training stops, the best stays)."""
        if self.rebuild is not None:
            if self.settings.record_trained_through:
                self.trained_through.append((step, self._loss()))
            try:
                self.rebuild({name: value.detach().numpy().copy() for name, value in self.model.parameters.items()})
            except AdmcError as error:
                self.stopped = f"step {step}: the tuned weights do not rebuild ({error})"
                return False
        value = self._loss()
        self.history.append((step, value))
        if value < self.best:
            self.best, self.best_step, self.waited = value, step, 0
            self.best_weights = self._weights()
        else:
            self.waited += 1
            if self.settings.rollback and self.waited < self.settings.patience:
                self._roll_back()
        return self.waited < self.settings.patience

    def _roll_back(self) -> None:
        """The best weights again (their rebuild: the compile is deterministic), smaller steps, Adam restarted."""
        with torch.no_grad():
            for name, value in self.model.parameters.items():
                value.copy_(self.best_weights[name])
        if self.rebuild is not None:
            self.rebuild({name: value.numpy().copy() for name, value in self.best_weights.items()})
        for group in self.optimiser.param_groups:
            group["lr"] *= ROLLBACK_FACTOR
        if self.scheduler is not None:  # it sets the rate from its base rates at every step
            self.scheduler.base_lrs = [rate * ROLLBACK_FACTOR for rate in self.scheduler.base_lrs]
        self.optimiser.state.clear()
        self.rollbacks += 1


def _step(model, draws: Draws, through: str, step: int, objective: str, gradient) -> float:
    """One step's loss, its gradient left in the parameters' ``grad``."""
    if gradient is None:
        loss = loss_of(model, draws, through, step - 1, objective)
        loss.backward()
        return float(loss.detach())
    loss, gradients = gradient(draws, step - 1, objective)
    for name, value in model.parameters.items():
        value.grad = gradients[name].to(value.dtype)
    return loss


def _scheduler(optimiser: torch.optim.Optimizer, settings: FitSettings):
    """The learning-rate schedule (None: constant)."""
    if settings.schedule not in SCHEDULES:
        raise AdmcError(f"learning-rate schedule {settings.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if settings.schedule == CONSTANT:
        return None
    steps = max(settings.max_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimiser,
                                             lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps)))


def fit(model, train: np.ndarray, holdout: np.ndarray, through: str, settings: FitSettings,
        progress: Callable[[int, int, float, float], None] | None = None, gradient=None,
        rebuild: Callable[[dict[str, np.ndarray]], None] | None = None,
        conditions: tuple[dict, dict] | None = None) -> FitResult:
    """Fine-tune ``model.parameters`` in place (restored to the best held-out weights); see the module docstring.
    ``progress(step, max_steps, loss, best held-out loss)`` is called after every step; ``gradient(draws, chip,
    objective)`` (``parallel.DataParallel``), when given, computes each step's loss and gradient instead;
    ``rebuild(weights)``, when given, recompiles the model (and the workers') for the current weights before each
    held-out evaluation (``_Selection``): the fit then continues through the new structure. ``conditions``: the
    training and the held-out samples' conditions (a conditional model)."""
    generator = torch.Generator().manual_seed(settings.seed)
    holdout_generator = torch.Generator().manual_seed(settings.seed + 1)
    train_data = torch.as_tensor(train, dtype=torch.float64)
    train_conditions, holdout_conditions = ({name: torch.as_tensor(value) for name, value in split.items()}
                                            for split in (conditions or ({}, {})))
    fixed = draw(model, torch.as_tensor(holdout, dtype=torch.float64), settings.holdout_batch, holdout_generator,
                 holdout_conditions)
    pool = None  # the samples objective: one noise per training sample, its reference sample the row's target
    if settings.objective == SAMPLES:
        fixed = with_reference(model, fixed)
        reference = with_reference(model, Draws(torch.randn(train_data.shape, generator=generator,
                                                            dtype=train_data.dtype), train_data, [],
                                                train_conditions))
        pool, train_data = reference.noise, reference.data
    optimiser = adam(list(model.parameters.values()), settings.learning_rate or LEARNING_RATES[settings.objective])
    scheduler = _scheduler(optimiser, settings)
    selection = _Selection(model, fixed, through, settings, rebuild, optimiser, scheduler)
    result = FitResult({}, 0, 0)
    began, iterations = time.perf_counter(), 0
    for step in range(1, settings.max_steps + 1):
        draws = draw(model, train_data, settings.batch, generator, train_conditions, pool)
        optimiser.zero_grad()
        loss = _step(model, draws, through, step, settings.objective, gradient)
        iterations += getattr(gradient or model, "iterations", 0) if through == "program" else 0
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        result.steps = step
        going = True
        if step % settings.evaluate_every == 0 or step == settings.max_steps:
            going = selection.evaluate(step)
        if progress is not None:
            progress(step, settings.max_steps, loss, selection.best)
        if not going:
            break
    elapsed = time.perf_counter() - began
    with torch.no_grad():
        for name, value in model.parameters.items():
            value.copy_(selection.best_weights[name])
    result.weights = {name: value.numpy().copy() for name, value in selection.best_weights.items()}
    result.best_step, result.holdout_loss, result.stopped = selection.best_step, selection.history, selection.stopped
    result.trained_through_loss, result.rollbacks = selection.trained_through, selection.rollbacks
    result.rebuilds = getattr(model, "rebuilds", 0) if rebuild is not None else 0
    result.seconds_per_step = elapsed / max(result.steps, 1)
    result.loop_iterations_per_step = iterations / max(result.steps, 1)
    return result
