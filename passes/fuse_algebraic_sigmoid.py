"""Fusion pass: recognise the algebraic sigmoid u / (1 + |u|^c)^(1/c) written out in elementary ops.

A model trained with an analog machine's own σ (the AOC drives its LEDs with this curve; its calibrated c is
in the target description) exports it as Abs, Pow(c), Add(1), Pow(1/c) and Div (or Mul by Pow(−1/c)). Each of
those ops alone is not affine in the state, so canonicalisation would refuse the first of them; this pass
replaces the chain by one ``AlgebraicSigmoid`` op (attributes ``exponent`` c and ``outer`` e, the exported
values, which float32 rounds apart from e = 1/c) that canonicalisation reads as the activation named by
``ir.adm.algebraic_sigmoid(c, e)``: exactly what the source computes.

Requires: a ``Graph``. Guarantees: a new graph computing the same function (the fused op's semantics are the
chain's, ``ir/evaluate.py``); a chain is fused only when both exponents are constants with e·c = 1 to
1e-6 (float32 exports), the added constant is 1 and the divided value is the one under Abs; intermediate ops are
dropped only when nothing else reads them. ``(graph, changed)`` in the QONNX style.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.ir.graph import Graph, Op

FUSED_OP = "AlgebraicSigmoid"
# float32 exports round c and 1/c separately (relative 6e-8 each)
RELATIVE_TOLERANCE = 1e-6


def _scalar(graph: Graph, name: str) -> float | None:
    value = graph.constants.get(name)
    if value is None or np.size(value) != 1:
        return None
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


def _close(value: float | None, wanted: float) -> bool:
    return value is not None and abs(value - wanted) <= RELATIVE_TOLERANCE * max(abs(wanted), 1.0)


def _match(graph: Graph, op: Op, producers: dict[str, Op]) -> tuple[str, tuple[float, float], list[Op]] | None:
    """(input, (c, e), the chain's ops) when ``op`` ends an algebraic sigmoid u / (1 + |u|^c)^e, else None."""
    if op.op_type not in ("Div", "Mul") or len(op.inputs) != 2:
        return None
    for value, scale in (op.inputs, op.inputs[::-1]) if op.op_type == "Mul" else (op.inputs,):
        outer = producers.get(scale)
        if outer is None or outer.op_type != "Pow" or len(outer.inputs) != 2:
            continue
        outer_exponent = _scalar(graph, outer.inputs[1])
        add = producers.get(outer.inputs[0])
        if outer_exponent is None or add is None or add.op_type != "Add" or len(add.inputs) != 2:
            continue
        for one, power_name in (add.inputs, add.inputs[::-1]):
            power = producers.get(power_name)
            if not _close(_scalar(graph, one), 1.0) or power is None or power.op_type != "Pow":
                continue
            exponent = _scalar(graph, power.inputs[1]) if len(power.inputs) == 2 else None
            absolute = producers.get(power.inputs[0])
            if exponent is None or exponent <= 0 or absolute is None or absolute.op_type != "Abs":
                continue
            outer_value = outer_exponent if op.op_type == "Div" else -outer_exponent
            if absolute.inputs[0] == value and _close(outer_value * exponent, 1.0):
                return value, (exponent, outer_value), [absolute, power, add, outer]
    return None


def apply(graph: Graph) -> tuple[Graph, bool]:
    """Every algebraic sigmoid chain replaced by one ``AlgebraicSigmoid`` op."""
    producers = graph.producers()
    fused: dict[str, Op] = {}
    chains: list[Op] = []
    for op in graph.ops:
        match = _match(graph, op, producers)
        if match is None:
            continue
        value, (exponent, outer), chain = match
        fused[op.name] = Op(op.name, FUSED_OP, (value,), op.outputs, {"exponent": exponent, "outer": outer},
                            source_op=op.source_op or op.op_type)
        chains.extend(chain)
    if not fused:
        return graph, False
    ops = [fused.get(op.name, op) for op in graph.ops]
    # Drop chain ops nobody reads any more (a chain value read elsewhere keeps its op).
    removable = {op.name for op in chains}
    while True:
        read = {name for op in ops for name in op.inputs} | set(graph.outputs)
        dead = {op.name for op in ops if op.name in removable and not any(out in read for out in op.outputs)}
        if not dead:
            break
        ops = [op for op in ops if op.name not in dead]
        removable -= dead
    return replace(graph, ops=ops), True
