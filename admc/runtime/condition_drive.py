"""The digital conditioning interface at run time: per-sample condition values → per-phase injected vectors.

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


@dataclass
class ConditioningInterface:
    inputs: tuple[ConditionInput, ...]
    boundaries: dict[str, ConditionValue]
    parts: list[ConditionPart]
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
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "") if part)
            raise AdmcError(f"{prefix}condition inputs do not match the model's ({', '.join(sorted(expected))}): "
                            f"{detail}")
        checked = {}
        for condition in self.inputs:
            array = np.asarray(conditions[condition.name])
            shapes = {(batch, *condition.shape)}
            if condition.kind == "index" or condition.shape in ((), (1,)):
                shapes |= {(batch,), (batch, 1)}
            if array.shape not in shapes:
                raise AdmcError(f"{prefix}condition '{condition.name}' has shape {list(array.shape)}; expected "
                                f"{list((batch, *condition.shape))} (one value per sample of the {batch})")
            if condition.kind == "index":
                if not (np.issubdtype(array.dtype, np.integer) or np.all(array == np.round(array))):
                    raise AdmcError(f"{prefix}condition '{condition.name}' is a class index: values must be "
                                    "integers")
                array = array.astype(np.int64)
            else:
                if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
                    raise AdmcError(f"{prefix}condition '{condition.name}' must be finite numbers")
                array = array.astype(np.float64)
            checked[condition.name] = array.reshape((batch, *condition.shape))
        return checked

    def drive_function(self, program: BlockProgram, conditions: dict[str, np.ndarray],
                       guidance: float | None = None) -> Callable[[Phase], np.ndarray]:
        """``phase → [B, n]`` extra injected drive for these samples' conditions (and run-time guidance)."""
        batch = next(iter(conditions.values())).shape[0] if conditions else 0
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
                      conditions: dict[str, np.ndarray]) -> np.ndarray | None:
    """Each sample's class (for per-class metrics): the first class-valued condition, else None."""
    for condition in inputs:
        declared = distribution.get(condition.name, {})
        if declared.get("kind") == "uniform":
            return conditions[condition.name].reshape(-1).astype(np.int64)
        if declared.get("kind") == "one-hot":
            return np.argmax(conditions[condition.name].reshape(len(conditions[condition.name]), -1), axis=1)
    return None


def parse_distribution(text: str, inputs: tuple[ConditionInput, ...]) -> tuple[str, dict]:
    """``NAME=uniform:K`` | ``NAME=one-hot:K`` | ``NAME=normal`` → (name, distribution)."""
    name, _, value = text.partition("=")
    names = [condition.name for condition in inputs]
    if name not in names:
        raise AdmcError(f"--condition-distribution '{text}': '{name}' is not a condition input "
                        f"({', '.join(names) or 'the model has none'})")
    kind, _, classes = value.partition(":")
    if kind == "normal" and not classes:
        return name, {"kind": "normal"}
    if kind in ("uniform", "one-hot") and classes.isdigit() and int(classes) > 0:
        return name, {"kind": kind, "classes": int(classes)}
    raise AdmcError(f"--condition-distribution '{text}': expected NAME=uniform:K, NAME=one-hot:K or NAME=normal")


def parse_null(text: str, inputs: tuple[ConditionInput, ...]) -> tuple[str, np.ndarray]:
    """``NAME=VALUE`` (a class index) or ``NAME=zeros`` → (name, the null condition value)."""
    name, _, value = text.partition("=")
    condition = next((item for item in inputs if item.name == name), None)
    if condition is None:
        raise AdmcError(f"--null-condition '{text}': '{name}' is not a condition input "
                        f"({', '.join(item.name for item in inputs) or 'the model has none'})")
    if value == "zeros":
        dtype = np.int64 if condition.kind == "index" else np.float64
        return name, np.zeros(condition.shape, dtype=dtype)
    try:
        number = int(value) if condition.kind == "index" else float(value)
    except ValueError:
        raise AdmcError(f"--null-condition '{text}': VALUE must be a class index, a number or 'zeros'") from None
    dtype = np.int64 if condition.kind == "index" else np.float64
    return name, np.full(condition.shape, number, dtype=dtype)
