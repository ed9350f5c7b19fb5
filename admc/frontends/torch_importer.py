"""One translation of a torch.export program into the graph IR: placeholders, outputs and op dispatch.

Requires: an ``ExportedProgram`` (any aten dialect) and a source name for messages.
Guarantees: ``TorchImporter(program, source).run()`` returns the ``Graph`` the module docstring of
``admc.frontends.torch_export`` describes: user inputs by placeholder name, parameters, buffers and lifted
constants as float64/int64 constants, each aten op through its handler (``torch_op_handlers``,
``torch_shape_handlers``) or, when it has none, as one op keeping the aten overload name; ops on symbolic sizes
are dropped, and any use of such a size as a tensor is refused naming the node.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from admc.core.errors import AdmcError
from admc.frontends import torch_op_handlers, torch_shape_handlers
from admc.frontends.torch_nodes import (
    bound_arguments,
    dimension,
    flatten_arguments,
    is_tensor_value,
    literal,
    scalar_array,
    target_name,
    to_numpy,
)
from admc.ir.graph import Graph, GraphInput, Op

HANDLERS = {**torch_op_handlers.HANDLERS, **torch_shape_handlers.HANDLERS}


class TorchImporter:
    """One translation; holds the growing op list and constants. Handlers add ops through ``emit``."""

    def __init__(self, program: ExportedProgram, source: str) -> None:
        self.program = program
        self.source = source
        self.ops: list[Op] = []
        self.constants: dict[str, np.ndarray] = {}
        self.constant_tensors: dict[str, torch.Tensor] = {}
        self.inputs: list[GraphInput] = []
        self.symbolic: set[str] = set()
        self.aliases: dict[str, str] = {}

    def run(self) -> Graph:
        self._import_placeholders()
        for node in self.program.graph.nodes:
            if node.op == "call_function":
                self._import_call(node)
        return Graph(
            ops=self.ops,
            inputs=self.inputs,
            outputs=self._user_outputs(),
            constants=self.constants,
            source=self.source,
        )

    # -- errors and names --

    def error(self, node: torch.fx.Node, reason: str) -> AdmcError:
        return AdmcError(f"{self.source}: node '{node.name}' op {target_name(node)}: {reason}")

    def add_constant(self, name: str, value: np.ndarray) -> str:
        self.constants[name] = value
        return name

    def emit(
        self,
        node: torch.fx.Node,
        op_type: str,
        inputs: list[str],
        attributes: dict[str, Any] | None = None,
        role: str = "",
    ) -> str:
        """Append one op for ``node``; ``role`` names an auxiliary op, the node's own op has none."""
        name = f"{node.name}/{role}" if role else node.name
        self.ops.append(
            Op(
                name=name,
                op_type=op_type,
                inputs=tuple(inputs),
                outputs=(name,),
                attributes=attributes or {},
                source_op=target_name(node),
            )
        )
        return name

    # -- placeholders and outputs --

    def _import_placeholders(self) -> None:
        placeholders = {node.name: node for node in self.program.graph.nodes if node.op == "placeholder"}
        for spec in self.program.graph_signature.input_specs:
            name = getattr(spec.arg, "name", None)
            node = placeholders.get(name) if name else None
            if spec.kind == InputKind.USER_INPUT:
                self._import_user_input(spec, node)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self._import_state(spec, name)
            elif node is not None and node.users:
                raise AdmcError(f"{self.source}: input '{name}' of kind {spec.kind.name} is not supported")

    def _import_user_input(self, spec: Any, node: torch.fx.Node | None) -> None:
        if node is None or not is_tensor_value(node):
            if node is not None and node.users:
                raise AdmcError(f"{self.source}: input '{spec.arg.name}' is not a tensor; admc needs tensors")
            return
        shape = tuple(dimension(size) for size in node.meta["val"].shape)
        integer = not node.meta["val"].is_floating_point()
        self.inputs.append(GraphInput(name=node.name, shape=shape, integer=integer))

    def _import_state(self, spec: Any, name: str) -> None:
        target = spec.target
        tensor = self.program.state_dict.get(target)
        if tensor is None:
            tensor = self.program.constants.get(target)
        if not isinstance(tensor, torch.Tensor):
            raise AdmcError(f"{self.source}: input '{name}' ({target}) has no tensor value in the program")
        self.constant_tensors[name] = tensor.detach()
        self.add_constant(name, to_numpy(tensor))

    def _user_outputs(self) -> list[str]:
        outputs = []
        for spec in self.program.graph_signature.output_specs:
            if spec.kind != OutputKind.USER_OUTPUT:
                continue
            name = getattr(spec.arg, "name", None)
            if name is None:
                raise AdmcError(f"{self.source}: output {spec.arg} is not a tensor; admc needs tensor outputs")
            outputs.append(self.aliases.get(name, name))
        return outputs

    # -- argument helpers --

    def value(self, node: torch.fx.Node, argument: Any, role: str) -> str:
        """The IR value name of a tensor argument; Python scalars become constants named ``<node>/<role>``."""
        if isinstance(argument, torch.fx.Node):
            if argument.name in self.symbolic:
                raise self.error(node, f"argument '{role}' is a size computed from the input shape")
            return self.aliases.get(argument.name, argument.name)
        if argument is None:
            return ""
        if isinstance(argument, (bool, int, float)):
            return self.add_constant(f"{node.name}/{role}", scalar_array(argument))
        raise self.error(node, f"argument '{role}' of type {type(argument).__name__} is not a tensor or scalar")

    def integer_constant(self, node: torch.fx.Node, role: str, values: list[int]) -> str:
        return self.add_constant(f"{node.name}/{role}", np.asarray(values, dtype=np.int64))

    # -- dispatch --

    def _import_call(self, node: torch.fx.Node) -> None:
        if node.target is operator.getitem:
            self._import_getitem(node)
            return
        value = node.meta.get("val")
        if not isinstance(node.target, torch._ops.OpOverload):
            if not isinstance(value, (torch.Tensor, list, tuple)):
                self.symbolic.add(node.name)
                return
            self.import_generic(node, target_name(node))
            return
        packet = node.target.overloadpacket.__name__
        if packet.startswith(("_assert", "sym_constrain")) or packet == "sym_size" or value is None:
            self.symbolic.add(node.name)
            return
        if not isinstance(value, (torch.Tensor, list, tuple)):
            self.symbolic.add(node.name)
            return
        handler = HANDLERS.get(packet)
        if handler is None:
            self.import_generic(node, target_name(node))
        else:
            handler(self, node, bound_arguments(node))

    # -- generic and multi-output ops --

    def _import_getitem(self, node: torch.fx.Node) -> None:
        producer, index = node.args
        if not isinstance(producer, torch.fx.Node) or producer.name in self.symbolic:
            self.symbolic.add(node.name)
            return
        self.aliases[node.name] = f"{producer.name}:{index}"

    def import_generic(self, node: torch.fx.Node, op_type: str) -> None:
        """One op of type ``op_type`` keeping the node's tensor arguments as inputs and the rest as attributes
        (later stages refuse it by that name unless they know it)."""
        inputs, attributes = [], {}
        arguments = bound_arguments(node) if isinstance(node.target, torch._ops.OpOverload) else {}
        if not arguments:
            arguments = {f"arg{index}": argument for index, argument in enumerate(node.args)}
            arguments.update(node.kwargs)
        for role, argument in arguments.items():
            tensors = [item for item in flatten_arguments(argument) if isinstance(item, torch.fx.Node)]
            if tensors:
                inputs.extend(self.value(node, tensor, role) for tensor in tensors)
            else:
                attributes[role] = literal(argument)
        value = node.meta.get("val")
        outputs = (node.name,)
        if isinstance(value, (list, tuple)):
            outputs = tuple(f"{node.name}:{index}" for index in range(len(value)))
        self.ops.append(Op(node.name, op_type, tuple(inputs), outputs, attributes, source_op=target_name(node)))
