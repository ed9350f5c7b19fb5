"""Canonicalisation pass: graph IR → canonical ADM network (``AdmNetwork``).

Requires: a ``Graph`` with ``state_input`` (x, [B, d]) and ``time_input`` (t, [B] or [B, 1]) identified.
Guarantees: an ``AdmNetwork`` computing exactly the graph's output (float64 algebra on the same weights):
linear ops, residual additions, concatenations and glue folded into node matrices; every tanh on a
state-dependent value is a node (ReLU too, where the target's periphery computes it: ``activations``);
time-only subgraphs (``t·e``, sinusoidal embeddings and their MLPs)
become time terms evaluated at compile time; condition-only subgraphs become the conditioning interface
(``condition_interface``). Anything not affine in the state apart from the target's
activations (other activations, convolutions, softmax, products of state values...) is refused naming the
node, its op and why (for an activation: which ones the target computes), before anything is written.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.core.limits import MemoryLimitError
from admc.ir.adm import (
    ALGEBRAIC_SIGMOID,
    EVERY_ACTIVATION,
    IDENTITY,
    RELU,
    STATE,
    TANH,
    AdmNetwork,
    AdmNode,
    Atom,
    accepts,
    algebraic_sigmoid,
)
from admc.ir.affine import Form, TimeValue
from admc.ir.condition import ConditionValue, is_condition_source
from admc.ir.evaluate import OP_SEMANTICS, evaluate_op
from admc.ir.graph import Graph, Op
from admc.passes import condition_interface, fuse_algebraic_sigmoid

GLUE_OPS = {"Identity", "Cast", "Reshape", "Flatten", "Unsqueeze", "Squeeze"}
ACTIVATION_REASONS = {
    "Relu": "ReLU", "Sigmoid": "sigmoid", "Gelu": "GELU", "Silu": "SiLU", "LeakyRelu": "leaky ReLU",
    "Elu": "ELU", "Softplus": "softplus", "HardTanh": "hard tanh", "Selu": "SELU", "Mish": "Mish",
    "HardSigmoid": "hard sigmoid", "HardSwish": "hard swish", "Abs": "absolute value",
}
STRUCTURE_REASONS = {
    "Conv": "convolutions are not MLP layers",
    "ConvTranspose": "convolutions are not MLP layers",
    "Softmax": "softmax mixes channels non-linearly (attention-like), not an MLP layer",
    "Attention": "attention is not an MLP layer",
    "MultiHeadAttention": "attention is not an MLP layer",
    "LayerNormalization": "normalisation divides by a state-dependent scale",
    "BatchNormalization": "batch normalisation is not supported; fold it into the Linear layer first",
}

Value = np.ndarray | TimeValue | Form


# The fused sigmoid maps to its kind; its full name (with the exponents) comes from ``op_activation``.
ACTIVATION_OPS = {"Tanh": TANH, "Relu": RELU, fuse_algebraic_sigmoid.FUSED_OP: ALGEBRAIC_SIGMOID}


def op_activation(op: Op) -> str:
    """The IR activation an activation op computes (the algebraic sigmoid's name carries its exponent)."""
    if op.op_type == fuse_algebraic_sigmoid.FUSED_OP:
        return algebraic_sigmoid(op.attributes["exponent"], op.attributes.get("outer"))
    return ACTIVATION_OPS[op.op_type]


class _Canonicaliser:
    def __init__(self, graph: Graph, activations: tuple[str, ...] = EVERY_ACTIVATION, target: str = "the target"):
        self.graph = graph
        self.activations = tuple(activations)
        self.target = target
        self.values: dict[str, Value] = dict(graph.constants)
        self.nodes: list[AdmNode] = []
        batch = next((entry.shape[0] for entry in graph.inputs if entry.name == graph.state_input), None)
        # A glue op may hard-code the export's batch size; probing with it keeps such reshapes valid.
        self.probe_batch = batch if isinstance(batch, int) and batch > 1 else 2

    def fail(self, op: Op, reason: str) -> AdmcError:
        return AdmcError(f"{self.graph.source}: {op.describe()}: {reason}")

    # -- entry ---------------------------------------------------------------------------------------
    def run(self) -> AdmNetwork:
        self._check_constants_finite()
        state_shape = self._input_shape(self.graph.state_input)
        dimension = state_shape[-1]
        self.values[self.graph.state_input] = Form.of_atom(Atom(STATE, IDENTITY), dimension, (dimension,))
        self.values[self.graph.time_input] = TimeValue.time_input(self._input_shape(self.graph.time_input))
        # Condition inputs: their subgraphs become the digital conditioning interface (condition_interface).
        self.conditions = condition_interface.ConditionBoundaries(self)
        for op in self.graph.topological_ops():
            arguments = [self.values[name] if name else None for name in op.inputs]
            self.values[op.outputs[0]] = self._apply(op, arguments)
        output = self.values[self.graph.outputs[0]]
        output_node = self._output_node(output, dimension)
        return AdmNetwork(dimension, self._reachable_nodes(output_node), output_node, self.graph.source,
                          self.conditions.boundaries)

    def _input_shape(self, name: str) -> tuple[int, ...]:
        shape = next(graph_input.shape for graph_input in self.graph.inputs if graph_input.name == name)
        return tuple(int(size) for size in shape[1:])

    def _check_constants_finite(self) -> None:
        consumers = {name: op for op in self.graph.ops for name in op.inputs}
        for name, array in self.graph.constants.items():
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                where = f" read by {consumers[name].describe()}" if name in consumers else ""
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise AdmcError(f"{self.graph.source}: weight '{name}'{where}: {bad} NaN/Inf entries")

    def _output_node(self, output: Value, dimension: int) -> AdmNode:
        if isinstance(output, np.ndarray | TimeValue):
            output = Form({}, np.zeros(dimension), [], (dimension,)).plus(self._as_form(output, dimension))
        if output.features != dimension:
            raise AdmcError(
                f"{self.graph.source}: output '{self.graph.outputs[0]}' has {output.features} features, "
                f"the state x has {dimension}: a velocity must have the state's shape"
            )
        return AdmNode("output", dimension, output.dense_terms(), output.constant, output.time_terms)

    def _reachable_nodes(self, output: AdmNode) -> list[AdmNode]:
        by_name = {node.name: node for node in self.nodes}
        needed: set[str] = set()
        frontier = [output]
        while frontier:
            node = frontier.pop()
            for atom in node.terms:
                if atom.source != STATE and atom.source not in needed and not is_condition_source(atom.source):
                    needed.add(atom.source)
                    frontier.append(by_name[atom.source])
        return [node for node in self.nodes if node.name in needed]

    # -- op dispatch ---------------------------------------------------------------------------------
    def _apply(self, op: Op, arguments: list) -> Value:
        present = [argument for argument in arguments if argument is not None]
        if any(isinstance(argument, ConditionValue) for argument in present):
            return self.conditions.apply(op, arguments)
        if not any(isinstance(argument, Form) for argument in present):
            if not any(isinstance(argument, TimeValue) for argument in present):
                return self._fold_constant(op, arguments)
            if op.op_type not in OP_SEMANTICS:
                raise self.fail(op, "op not supported (even on the time-only path)")
            try:
                return TimeValue.from_op(op, arguments)
            except (ValueError, IndexError, TypeError, KeyError) as error:
                raise self.fail(op, f"inputs of inconsistent shapes ({' '.join(str(error).split())})") from None
        handler = getattr(self, f"_form_{op.op_type.lower()}", None)
        if op.op_type in ACTIVATION_OPS and not accepts(self.activations, op_activation(op)):
            handler = None
        if handler is None:
            raise self.fail(op, self._refusal_reason(op))
        try:
            return handler(op, arguments)
        except MemoryLimitError as error:
            raise self.fail(op, str(error)) from None
        except (ValueError, IndexError, TypeError, KeyError) as error:  # inputs whose shapes the op cannot take
            raise self.fail(op, f"inputs of inconsistent shapes ({' '.join(str(error).split())})") from None

    def _refusal_reason(self, op: Op) -> str:
        if op.op_type in ACTIVATION_REASONS or op.op_type in ACTIVATION_OPS:
            name = ACTIVATION_REASONS.get(op.op_type) or (op_activation(op) if op.op_type in ACTIVATION_OPS
                                                           else op.op_type.lower())
            computed = ", ".join(self.activations) or "no nonlinearity"
            return f"{name} on a value that depends on the state x; {self.target} computes {computed}"
        if op.op_type in STRUCTURE_REASONS:
            return STRUCTURE_REASONS[op.op_type]
        return "op not supported on values that depend on the state x"

    def _fold_constant(self, op: Op, arguments: list) -> np.ndarray:
        try:
            return evaluate_op(op, arguments)
        except AdmcError:
            raise self.fail(op, "op not supported") from None
        except Exception as error:  # numpy shape errors in a malformed graph
            raise self.fail(op, f"cannot evaluate constant subgraph ({error})") from None

    def _as_form(self, value: Value, features: int) -> Form:
        if isinstance(value, Form):
            return value
        if isinstance(value, TimeValue):
            return Form({}, np.zeros(features), [], (features,)).plus_time(value, "time")
        return Form({}, np.zeros(features), [], (features,)).plus_constant(value)

    def _require_vector(self, op: Op, form: Form) -> None:
        if len(form.shape) != 1:
            raise self.fail(op, f"state-dependent value of shape [B, {', '.join(map(str, form.shape))}]: "
                                "only [B, features] activations are supported")

    # -- linear algebra ------------------------------------------------------------------------------
    def _form_gemm(self, op: Op, arguments: list) -> Form:
        left, right, *rest = arguments
        bias = rest[0] if rest else None
        if not isinstance(left, Form) or isinstance(right, Form | TimeValue) or isinstance(bias, Form):
            raise self.fail(op, "only state-dependent input times constant weights is supported")
        if op.attributes.get("transA", 0):
            raise self.fail(op, "transA=1 on a state-dependent input is not a batch of vectors")
        self._require_vector(op, left)
        weights = right.T if op.attributes.get("transB", 0) else right
        alpha = float(op.attributes.get("alpha", 1.0))
        # × 1.0 is exact: no scaled copy of the weights (the form's product copies them once anyway).
        result = left.linear(weights.T if alpha == 1.0 else alpha * weights.T)
        if bias is None:
            return result
        beta = float(op.attributes.get("beta", 1.0))
        if isinstance(bias, TimeValue):
            scaled = TimeValue.from_op(Op(op.name, "Mul", (), ()), [bias, np.asarray(beta)])
            return result.plus_time(scaled, f"{op.name} time bias")
        return result.plus_constant(beta * np.asarray(bias))

    def _form_matmul(self, op: Op, arguments: list) -> Form:
        left, right = arguments
        if not isinstance(left, Form) or not isinstance(right, np.ndarray) or right.ndim != 2:
            raise self.fail(op, "only state-dependent input times a constant 2-D weight is supported")
        self._require_vector(op, left)
        return left.linear(right.T)

    def _elementwise_sum(self, op: Op, left: Value, right: Value, sign: float) -> Form:
        features = (left if isinstance(left, Form) else right).features
        shape = (left if isinstance(left, Form) else right).shape
        terms = []
        for value, factor in ((left, 1.0), (right, sign)):
            if isinstance(value, TimeValue):
                columns = int(np.prod(value.shape, dtype=np.int64)) if value.shape else 1
                if columns not in (1, features):
                    raise self.fail(op, f"time value of shape [B, {columns}] does not broadcast to "
                                        f"{features} features")
                if factor != 1.0:
                    value = TimeValue.from_op(Op(op.name, "Neg", (), ()), [value])
                terms.append(Form({}, np.zeros(features), [], shape).plus_time(value, f"{op.name} time"))
            elif isinstance(value, np.ndarray):
                if value.size not in (1, features):
                    raise self.fail(op, f"constant of shape {list(value.shape)} does not broadcast to "
                                        f"{features} features")
                terms.append(Form({}, np.zeros(features), [], shape).plus_constant(factor * value))
            else:
                if value.features != features:
                    raise self.fail(op, f"adding values of {value.features} and {features} features")
                terms.append(value if factor == 1.0 else value.scaled(np.asarray(factor)))
        result = terms[0].plus(terms[1])
        result.shape = shape
        return result

    def _form_add(self, op: Op, arguments: list) -> Form:
        return self._elementwise_sum(op, arguments[0], arguments[1], 1.0)

    def _form_sub(self, op: Op, arguments: list) -> Form:
        return self._elementwise_sum(op, arguments[0], arguments[1], -1.0)

    def _form_neg(self, op: Op, arguments: list) -> Form:
        return arguments[0].scaled(np.asarray(-1.0))

    def _constant_factor(self, op: Op, arguments: list, divide: bool) -> Form:
        left, right = arguments
        if divide and not isinstance(left, Form):
            raise self.fail(op, "dividing by a state-dependent value is not affine in the state")
        form, factor = (left, right) if isinstance(left, Form) else (right, left)
        if not isinstance(factor, np.ndarray):
            raise self.fail(op, "product of a state-dependent value with a time- or state-dependent value "
                                "is not affine in the state")
        if factor.size not in (1, form.features):
            raise self.fail(op, f"constant of shape {list(factor.shape)} does not broadcast to "
                                f"{form.features} features")
        return form.scaled(1.0 / factor if divide else factor)

    def _form_mul(self, op: Op, arguments: list) -> Form:
        return self._constant_factor(op, arguments, divide=False)

    def _form_div(self, op: Op, arguments: list) -> Form:
        return self._constant_factor(op, arguments, divide=True)

    def _form_concat(self, op: Op, arguments: list) -> Form:
        forms = [argument for argument in arguments if isinstance(argument, Form)]
        rank = len(forms[0].shape) + 1
        axis = int(op.attributes.get("axis", 0))
        if axis not in (rank - 1, -1) or any(len(form.shape) != 1 for form in forms):
            raise self.fail(op, "only concatenation along the feature axis of [B, features] values")
        parts = []
        for argument in arguments:
            if isinstance(argument, np.ndarray):
                raise self.fail(op, "concatenating a constant with state-dependent values would need a "
                                    "batch-broadcast constant")
            features = int(np.prod(argument.shape, dtype=np.int64)) if argument.shape else 1
            parts.append(self._as_form(argument, features))
        return Form.concatenated(parts)

    def _form_slice(self, op: Op, arguments: list) -> Form:
        form, starts, ends, *rest = arguments
        axes = rest[0] if rest and rest[0] is not None else np.arange(np.size(starts))
        steps = rest[1] if len(rest) > 1 and rest[1] is not None else np.ones(np.size(starts), np.int64)
        indices = np.arange(form.features)
        for start, end, axis, step in zip(np.ravel(starts), np.ravel(ends), np.ravel(axes), np.ravel(steps),
                                          strict=True):
            if int(axis) == 0:
                if not (int(start) == 0 and int(end) >= 2**31 - 1 and int(step) == 1):
                    raise self.fail(op, "slicing the batch axis of a state-dependent value")
                continue
            if int(axis) not in (len(form.shape), -1) or len(form.shape) != 1:
                raise self.fail(op, "only slices along the feature axis of [B, features] values")
            indices = indices[slice(int(start), int(end), int(step))]
        result = form.selected(indices)
        return result

    # -- nonlinearity --------------------------------------------------------------------------------
    def _form_tanh(self, op: Op, arguments: list) -> Form:
        form = arguments[0]
        if form.is_exactly(Atom(STATE, IDENTITY)):
            return Form.of_atom(Atom(STATE, TANH), form.features, form.shape)
        return self._activated_node(form, TANH)

    def _form_relu(self, op: Op, arguments: list) -> Form:
        # relu(x) on the bare state still becomes a node (an identity layer), so the state keeps one reading.
        return self._activated_node(arguments[0], RELU)

    def _form_algebraicsigmoid(self, op: Op, arguments: list) -> Form:
        # Like relu: on the bare state it still becomes a node, so the state keeps its one reading.
        return self._activated_node(arguments[0], op_activation(op))

    def _activated_node(self, form: Form, activation: str) -> Form:
        name = f"hidden_{len(self.nodes) + 1}"
        self.nodes.append(AdmNode(name, form.features, form.dense_terms(), form.constant, form.time_terms,
                                  activation))
        return Form.of_atom(Atom(name, activation), form.features, form.shape)

    # -- glue ----------------------------------------------------------------------------------------
    def _glue(self, op: Op, arguments: list) -> Form:
        form = arguments[0]
        probe = np.zeros((self.probe_batch, *form.shape))
        try:
            reshaped = evaluate_op(op, [probe, *arguments[1:]])
        except Exception as error:  # shapes the glue op cannot apply to
            raise self.fail(op, f"cannot apply to a [B, {form.features}] value ({error})") from None
        if reshaped.ndim == 0 or reshaped.shape[0] != self.probe_batch or reshaped.size != probe.size:
            raise self.fail(op, "reshapes across the batch axis of a state-dependent value")
        return form.reshaped(tuple(int(size) for size in reshaped.shape[1:]))

    _form_identity = _form_cast = _form_reshape = _form_flatten = _glue
    _form_unsqueeze = _form_squeeze = _glue


def canonicalize(graph: Graph, activations: tuple[str, ...] = EVERY_ACTIVATION,
                 target: str = "the target") -> AdmNetwork:
    """Run canonicalisation on an imported graph whose state and time inputs are identified.

    ``activations`` are the nonlinearities the target computes (default: every one the IR has); an
    activation outside them is refused naming the node and ``target``."""
    if not graph.state_input or not graph.time_input:
        raise AdmcError(f"{graph.source}: state and time inputs must be identified before canonicalisation")
    graph, _ = fuse_algebraic_sigmoid.apply(graph)
    return _Canonicaliser(graph, activations, target).run()
