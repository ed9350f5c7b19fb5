"""Build-time check that a packed program's arithmetic can run: every number an executor reads is finite and
inside the state range the executors run in.

Requires: a packed ``BlockProgram``, the schedule's tabulation times and the source ``Graph`` it came from.
Guarantees: ``checked_static_injection`` tabulates the static injection table (``tabulate_static_injection``)
and refuses, with an ``AdmcError`` naming the array, the entry (time, channel, group) and where possible the
source node and weight, a program whose blocks, injections, biases or time table hold a NaN, an Inf or an
entry beyond ``DIVERGENCE_BOUND``. Without this, such a model builds and its bundle fails at the first loop
(``verify``/``simulate``: "the loop diverged") or at reading its own NaN table.

Why the program, and why that bound: the program is what every executor runs, after canonicalisation folded
products of weights and tabulated the time embedding, so a check of the source's weights alone would miss a
product of two large factors and a NaN made by an op (Sqrt of a negative time feature). A bias or a time term
is injected into its channel at every iteration, so the loop's fixed point sits at that value: beyond the
executors' ``DIVERGENCE_BOUND`` (the one constant, in ``admc.runtime.executor``) the first loop is declared
diverged whatever α is; a weight beyond it does the same to any activation not vanishingly small.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.evaluate import evaluate_op
from admc.ir.graph import Graph, Op
from admc.ir.program import BlockProgram, StaticInjection, block_name, tabulate_static_injection
from admc.runtime.executor import DIVERGENCE_BOUND

PROBE_BATCH = 2  # samples the source graph is evaluated on to find the node that makes a bad value


def checked_static_injection(program: BlockProgram, times: np.ndarray, graph: Graph) -> StaticInjection:
    """The static injection table of ``program`` at ``times``, after checking the program's arithmetic."""
    with np.errstate(all="ignore"):  # a NaN or overflow the time terms make is refused below, naming it
        table = tabulate_static_injection(program, times)
    check_program_arithmetic(program, table, graph)
    return table


def _first_bad_entry(array: np.ndarray) -> tuple[int, ...] | None:
    # min and max read the array without a temporary (|array| of the weights: 285 MB at 36M); NaN fails both.
    if array.size == 0 or (-DIVERGENCE_BOUND <= np.min(array) and np.max(array) <= DIVERGENCE_BOUND):
        return None
    bad = ~(np.abs(array) <= DIVERGENCE_BOUND)
    return tuple(int(index) for index in np.argwhere(bad)[0])


def _channel(program: BlockProgram, channel: int) -> str:
    group = next(group for group in program.groups if group.offset <= channel < group.stop)
    return f"channel {channel} ({group.name}[{channel - group.offset}])"


def _arrays(program: BlockProgram, table: StaticInjection):
    """(what, array, locate) for every array an executor reads, named by its path in a bundle (as
    ``admc.bundle.program_io`` writes it, which users see); ``locate(index)`` gives the entry's place in words
    and the time the source is probed at to find the node that made it."""
    groups = {group.name: group for group in program.groups}
    for scale_class, time_table in sorted(table.time_tables.items()):
        yield (f"the static injection table injection/time_table_{scale_class}.npy", time_table,
               lambda index, times=table.times: (f"t = {times[index[0]]:.6g}, {_channel(program, index[1])}",
                                                 float(times[index[0]])))
    for scale_class, constant in sorted(table.constants.items()):
        yield (f"the static injection constant injection/constant_{scale_class}.npy", constant,
               lambda index: (_channel(program, index[0]), 0.0))
    for number, block in enumerate(program.blocks):
        row, column = groups[block.row_group], groups[block.column_group]
        yield (f"the weights of {block_name(number)}", block.matrix,
               lambda index, row=row, column=column: (f"{_channel(program, row.offset + index[0])} from "
                                                      f"{_channel(program, column.offset + index[1])}", 0.0))
    for part in program.injections:
        group = groups[part.group]
        yield (f"the state injection into group '{part.group}'", part.matrix,
               lambda index, group=group: (_channel(program, group.offset + index[0]), 0.0))


def check_program_arithmetic(program: BlockProgram, table: StaticInjection, graph: Graph) -> None:
    """Refuse a program with a non-finite entry or one beyond ``DIVERGENCE_BOUND`` (module docstring)."""
    for what, array, locate in _arrays(program, table):
        index = _first_bad_entry(np.asarray(array, dtype=np.float64))
        if index is None:
            continue
        value = float(array[index])
        where, time = locate(index)
        cause = _culprit(graph, time) or _bad_weight(graph)
        culprit = f", made by {cause}," if cause else ""
        if np.isfinite(value):
            raise AdmcError(f"{graph.source}: {what}: entry {value:.3g} at {where}{culprit} is beyond the executors' "
                            f"state range ±{DIVERGENCE_BOUND:.0e} (the first loop diverges); rescale or retrain "
                            "the model")
        raise AdmcError(f"{graph.source}: {what}: entry {value} at {where}{culprit} is not a finite number; what "
                        "the model computes from t must be finite at every time of the schedule")


def _bad(value: np.ndarray) -> bool:
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        return False
    return bool(value.size) and not (np.all(np.isfinite(value)) and np.max(np.abs(value)) <= DIVERGENCE_BOUND)


def _probe_inputs(graph: Graph, time: float) -> dict[str, np.ndarray]:
    values = {}
    for graph_input in graph.inputs:
        shape = (PROBE_BATCH, *(int(size) for size in graph_input.shape[1:]))
        if graph_input.name == graph.time_input:
            values[graph_input.name] = np.full(shape, time)
        elif graph_input.name == graph.state_input:  # ones, not zeros: a large weight on x shows in its product
            values[graph_input.name] = np.ones(shape)
        else:
            values[graph_input.name] = np.zeros(shape, dtype=np.int64 if graph_input.integer else np.float64)
    return values


def _bad_weight(graph: Graph) -> str | None:
    """The first float weight of the source holding a bad value, with the node reading it; None if none."""
    readers = {name: op for op in graph.ops for name in op.inputs}
    for name, value in graph.constants.items():
        if name in readers and _bad(value):
            return f"{readers[name].describe()} (reading weight '{name}')"
    return None


def _describe(op: Op, arguments: list, graph: Graph) -> str:
    weights = [f"weight '{name}'" for name, value in zip(op.inputs, arguments, strict=True)
               if name in graph.constants and value is not None and _bad(value)]
    return op.describe() + (f" (reading {', '.join(weights)})" if weights else "")


def _culprit(graph: Graph, time: float) -> str | None:
    """The first op (in topological order) whose output is bad although no computed input of it is, at
    x = 1, t = ``time`` and zero conditions; None when the source graph cannot be evaluated so."""
    try:
        values: dict[str, np.ndarray] = dict(graph.constants) | _probe_inputs(graph, time)
        with np.errstate(all="ignore"):
            for op in graph.topological_ops():
                arguments = [values[name] if name else None for name in op.inputs]
                output = np.asarray(evaluate_op(op, arguments))
                computed_bad = any(_bad(value) for name, value in zip(op.inputs, arguments, strict=True)
                                   if value is not None and name not in graph.constants)
                if _bad(output) and not computed_bad:
                    return _describe(op, arguments, graph)
                values[op.outputs[0]] = output
    except (AdmcError, ValueError, TypeError, IndexError, KeyError):  # best effort: the message stands without
        return None
    return None
