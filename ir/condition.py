"""Values computed from condition inputs (class index, condition vector, guidance scale) and the time, never
from the diffusion state: the program's digital conditioning interface.

A ``ConditionValue`` is evaluated per sample on a ``ConditionContext`` (times [S] and each condition input's
[S, ...] values) with the graph IR's own op semantics. Where such a value enters a state-dependent value it
becomes a *boundary*: an atom ``condition:k`` of the canonical network whose per-sample value is injected
into the loop like a time term, but computed at run time (once per sample, once per phase time when it
depends on t).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from admc.ir.affine import TimeValue
from admc.ir.evaluate import evaluate_op
from admc.ir.graph import Op

CONDITION_PREFIX = "condition:"
NULL_SUFFIX = ":null"
# Multiply-adds per output element of the ops that do matrix products (the rest count one per element).
_PRODUCTS = ("Gemm", "MatMul")


def is_condition_source(source: str) -> bool:
    return source.startswith(CONDITION_PREFIX)


def is_null_source(source: str) -> bool:
    return is_condition_source(source) and source.endswith(NULL_SUFFIX)


@dataclass
class ConditionContext:
    """What a condition value is evaluated on: times [S] and condition inputs ``name → [S, ...]``."""

    times: np.ndarray
    conditions: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.times.shape[0])


@dataclass
class ConditionValue:
    """A value of the conditions (and maybe t); ``evaluate(context)`` returns [S, *shape].

    ``parameters`` and ``multiply_adds`` (per sample) count the constants read and the arithmetic of the
    subgraph computing it, for the build report; ``inputs`` are the condition inputs it reads.
    """

    compute: Callable[[ConditionContext, dict], np.ndarray]
    shape: tuple[int, ...]
    depends_on_time: bool
    inputs: frozenset[str]
    operations: frozenset[tuple[str, int, int]]  # (op name, parameters, multiply-adds per sample)

    def evaluate(self, context: ConditionContext, cache: dict | None = None) -> np.ndarray:
        cache = {} if cache is None else cache
        key = id(self)
        if key not in cache:
            cache[key] = self.compute(context, cache)
        return cache[key]

    def columns(self, context: ConditionContext, cache: dict | None = None) -> np.ndarray:
        """[S, features]: the value with its non-batch shape flattened."""
        return np.asarray(self.evaluate(context, cache), dtype=np.float64).reshape(context.size, -1)

    @property
    def features(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def parameters(self) -> int:
        return sum(parameters for _, parameters, _ in self.operations)

    @property
    def multiply_adds(self) -> int:
        return sum(work for _, _, work in self.operations)

    @staticmethod
    def condition_input(name: str, shape: tuple[int, ...]) -> ConditionValue:
        def compute(context: ConditionContext, cache: dict) -> np.ndarray:
            return np.asarray(context.conditions[name]).reshape((-1, *shape))

        return ConditionValue(compute, shape, False, frozenset([name]), frozenset())

    @staticmethod
    def from_op(op: Op, arguments: list, trial: ConditionContext) -> ConditionValue:
        """Apply ``op`` to condition values, time values (``TimeValue``) and constants."""

        def compute(context: ConditionContext, cache: dict) -> np.ndarray:
            values = []
            for argument in arguments:
                if isinstance(argument, ConditionValue):
                    values.append(argument.evaluate(context, cache))
                elif isinstance(argument, TimeValue):
                    values.append(argument.evaluate(context.times, cache))
                else:
                    values.append(argument)
            return evaluate_op(op, values)

        result = compute(trial, {})
        conditions = [argument for argument in arguments if isinstance(argument, ConditionValue)]
        constants = [argument for argument in arguments if isinstance(argument, np.ndarray)]
        parameters = sum(int(np.size(constant)) for constant in constants if np.size(constant) > 1)
        elements = int(np.prod(result.shape[1:], dtype=np.int64)) if result.ndim > 1 else 1
        if op.op_type in _PRODUCTS:
            inner = next((int(np.shape(constant)[0]) for constant in constants if np.ndim(constant) == 2), 1)
            work = elements * inner
        else:
            work = 0 if op.op_type in ("Gather", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Identity",
                                       "Cast", "Concat", "Slice") else elements
        operations = frozenset().union(*(value.operations for value in conditions)) | {(op.name, parameters, work)}
        return ConditionValue(
            compute,
            tuple(result.shape[1:]),
            any(value.depends_on_time for value in conditions) or any(
                isinstance(argument, TimeValue) for argument in arguments),
            frozenset().union(*(value.inputs for value in conditions)),
            operations,
        )

    def at_fixed_conditions(self, fixed: dict[str, np.ndarray]) -> ConditionValue:
        """This value with its condition inputs replaced by ``fixed`` (one value each, e.g. the null
        condition for classifier-free guidance), broadcast over the samples."""

        def compute(context: ConditionContext, cache: dict) -> np.ndarray:
            conditions = dict(context.conditions)
            conditions.update({name: np.repeat(np.asarray(value)[None], context.size, axis=0)
                               for name, value in fixed.items()})
            return self.evaluate(ConditionContext(context.times, conditions), {})

        return ConditionValue(compute, self.shape, self.depends_on_time, self.inputs - set(fixed), self.operations)
