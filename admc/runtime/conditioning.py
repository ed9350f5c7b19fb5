"""The digital conditioning interface at run time: per-sample condition values → per-phase injected vectors.

Every program has one interface; an unconditional program's is empty (no inputs, no parts), and everything
below reduces to nothing for it: ``check`` accepts exactly no conditions, ``sample_conditions`` draws none,
``drive_function`` gives no drive.

Requires: the boundary values (``ConditionValue`` per ``condition:k`` atom, from the canonical network) and
the program's condition injection parts (``passes.condition_interface.ConditionPart``), and per-sample
condition arrays checked against the declared condition inputs. Guarantees: ``drive(phase)`` is the [B, n]
vector Σ_parts block_scale(class, phase) · guidance factor · matrix · value(t_phase, c_b), added to the
phase's static injection by the executors. Boundary values are evaluated once per distinct phase time
(once in total when they do not depend on t) and cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from admc.core.errors import AdmcError
from admc.frontends.signature import ConditionInput
from admc.ir.condition import ConditionContext, ConditionValue
from admc.ir.program import BlockProgram, Phase, block_scale
from admc.passes.condition_interface import ConditionPart, guidance_factors

Drive = Callable[[Phase], np.ndarray]
# Conditions for a build-time run: (program, samples, seed) → that program's drive for ``samples`` seeded draws
# of the declared conditions (None: an unconditional program).
ConditionSampler = Callable[[BlockProgram, int, int], "Drive | None"]


@dataclass
class ConditioningInterface:
    inputs: tuple[ConditionInput, ...] = ()
    boundaries: dict[str, ConditionValue] = field(default_factory=dict)
    parts: list[ConditionPart] = field(default_factory=list)
    guidance: float | None = None  # the guidance weight the program was built for (None: no guidance)
    guided_blocks: dict[str, list[int]] = field(default_factory=dict)
    distribution: dict[str, dict] = field(default_factory=dict)  # how verify draws conditions

    def scaled(self, program: BlockProgram) -> ConditioningInterface:
        """The parts in the program's voltage units (× each row group's voltage scale)."""
        scales = {group.name: group.voltage_scale for group in program.groups}
        return replace(self, parts=[replace(part, matrix=scales[part.group] * part.matrix) for part in self.parts])

    def check(self, conditions: dict[str, np.ndarray], batch: int, where: str = "") -> dict[str, np.ndarray]:
        """Per-sample condition arrays with the declared shapes: ``name → [batch, *shape]``."""
        prefix = f"{where}: " if where else ""
        expected = {condition.name for condition in self.inputs}
        given = set(conditions)
        if given != expected:
            missing, extra = sorted(expected - given), sorted(given - expected)
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)} (give --condition NAME=FILE.npy)" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "") if part)
            raise AdmcError(f"{prefix}condition inputs do not match the model's "
                            f"({', '.join(sorted(expected)) or 'it has none'}): {detail}")
        return {condition.name: _checked(condition, np.asarray(conditions[condition.name]), batch, prefix)
                for condition in self.inputs}

    def drive_function(self, program: BlockProgram, conditions: dict[str, np.ndarray],
                       guidance: float | None = None) -> Drive | None:
        """``phase → [B, n]`` extra injected drive for these samples' conditions (and run-time guidance);
        None when the interface injects nothing (the executors then add no drive at all)."""
        if not self.parts:
            return None
        batch = max((len(values) for values in conditions.values()), default=0)
        factors = guidance_factors(self.guidance, guidance) if (
            guidance is not None and self.guidance is not None) else guidance_factors(0.0, 0.0)
        rows = {group.name: slice(group.offset, group.stop) for group in program.groups}
        values: dict[float, dict[str, np.ndarray]] = {}
        vectors: dict[tuple, np.ndarray] = {}

        def boundary_values(time: float) -> dict[str, np.ndarray]:
            if time not in values:
                context, cache = ConditionContext(np.full(batch, time), conditions), {}
                values[time] = {name: value.columns(context, cache) for name, value in self.boundaries.items()}
            return values[time]

        def drive(phase: Phase) -> np.ndarray:
            key = (phase.time, phase.step_scale, phase.loop)
            if key not in vectors:
                current = boundary_values(phase.time)
                vector = np.zeros((batch, program.size))
                for part in self.parts:
                    factor = block_scale(part.scale_class, phase.step_scale, phase.loop) * factors[part.guidance]
                    if factor != 0.0:
                        vector[:, rows[part.group]] += factor * (current[part.source] @ part.matrix.T)
                vectors[key] = vector
            return vectors[key]

        return drive


def _checked(condition: ConditionInput, array: np.ndarray, batch: int, prefix: str) -> np.ndarray:
    shapes = {(batch, *condition.shape)}
    if condition.kind == "index" or condition.shape in ((), (1,)):
        shapes |= {(batch,), (batch, 1)}
    if array.shape not in shapes:
        raise AdmcError(f"{prefix}condition '{condition.name}' has shape {list(array.shape)}; expected "
                        f"{list((batch, *condition.shape))} (one value per sample of the {batch})")
    if condition.kind == "index":
        if not (np.issubdtype(array.dtype, np.integer) or np.all(array == np.round(array))):
            raise AdmcError(f"{prefix}condition '{condition.name}' is a class index: values must be integers")
        array = array.astype(np.int64)
    else:
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise AdmcError(f"{prefix}condition '{condition.name}' must be finite numbers")
        array = array.astype(np.float64)
    return array.reshape((batch, *condition.shape))


@dataclass(frozen=True)
class RunConditions:
    """One run's conditioning: the bundle's interface, the samples' checked conditions and the run-time
    guidance weight (None: the weight the program was built for). ``RunConditions()`` is an unconditional
    run."""

    interface: ConditioningInterface = field(default_factory=ConditioningInterface)
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    guidance: float | None = None

    def drive(self, program: BlockProgram) -> Drive | None:
        """The per-phase drive of these conditions on ``program`` (in that program's units)."""
        return self.interface.drive_function(program, self.conditions, self.guidance)


def sample_conditions(inputs: tuple[ConditionInput, ...], distribution: dict, samples: int,
                      seed: int) -> dict[str, np.ndarray]:
    """Conditions drawn from the bundle's declared distribution (``uniform`` over classes for a class index,
    ``one-hot`` over classes or ``normal`` for a vector); a condition without one is refused."""
    generator = np.random.default_rng(seed)
    drawn = {}
    for condition in inputs:
        declared = distribution.get(condition.name)
        if declared is None:
            raise AdmcError(f"condition '{condition.name}' has no declared distribution to draw from; build with "
                            f"--condition-distribution {condition.name}=uniform:K|one-hot:K|normal")
        kind = declared["kind"]
        if kind == "uniform":
            classes = generator.integers(0, int(declared["classes"]), samples)
            drawn[condition.name] = classes.reshape((samples, *condition.shape)).astype(np.int64)
        elif kind == "one-hot":
            classes = generator.integers(0, int(declared["classes"]), samples)
            drawn[condition.name] = np.eye(int(declared["classes"]))[classes].reshape((samples, *condition.shape))
        elif kind == "normal":
            drawn[condition.name] = generator.standard_normal((samples, *condition.shape))
        else:
            raise AdmcError(f"condition '{condition.name}': unknown distribution kind '{kind}'")
    return drawn


def condition_classes(inputs: tuple[ConditionInput, ...], distribution: dict,
                      conditions: dict[str, np.ndarray]) -> np.ndarray:
    """Each sample's class (for per-class metrics) from the first class-valued condition; empty when no
    condition is class-valued (then there are no classes to report)."""
    for condition in inputs:
        declared = distribution.get(condition.name, {})
        if declared.get("kind") == "uniform":
            return conditions[condition.name].reshape(-1).astype(np.int64)
        if declared.get("kind") == "one-hot":
            return np.argmax(conditions[condition.name].reshape(len(conditions[condition.name]), -1), axis=1)
    return np.zeros(0, dtype=np.int64)
