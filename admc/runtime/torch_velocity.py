"""Run a PyTorch source model (an exported program, a ``.pt2`` archive or an ``nn.Module``) in float64.

Requires: a ``torch.export.ExportedProgram``, a ``.pt2`` file written by ``torch.export.save`` or an ``nn.Module``,
whose inputs are the state x [B, d], the time t ([B] or [B, 1]) and any named conditions.
Guarantees: parameters, buffers and tensor constants are converted to float64, and in an exported graph every op
that creates a tensor with an explicit low-precision float ``dtype`` is rewritten to float64. An ``nn.Module``
that still computes in float32 internally (``x.float()``, a float32 constant created in ``forward``) cannot be
rewritten: if its output is not float64 the result is float32-accurate only, so ``output_dtype`` records the
dtype and a ``RuntimeWarning`` says so once. Nothing is unpickled: a ``.pt2`` archive is checked
(``admc.frontends.pt2_archive``) and read with ``torch.export.load``. ``jacobian`` gives ∂f/∂x by autograd.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from admc.core.errors import AdmcError
from admc.frontends.messages import quote
from admc.frontends.pt2_archive import check_archive_is_safe
from admc.frontends.signature import identify_signature
from admc.frontends.torch_nodes import dimension
from admc.ir.graph import GraphInput
from admc.runtime.velocity import Velocity

_LOW_PRECISION_TORCH = {torch.float32, torch.float16, torch.bfloat16}


def _to_float64_dtype(value: Any) -> Any:
    if isinstance(value, torch.dtype) and value in _LOW_PRECISION_TORCH:
        return torch.float64
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float64_dtype(item) for item in value)
    return value


def _module_to_float64(module: torch.nn.Module, exported: bool = False) -> torch.nn.Module:
    """``module`` in float64; explicit float dtypes in an fx graph are rewritten.

    ``exported`` marks the module of an ``ExportedProgram``: fresh (so converted in place) and already
    fixed in eval semantics (it refuses ``.eval()``). Any other module is copied and put in eval mode.
    """
    module = (module if exported else copy.deepcopy(module)).to(torch.float64)
    registered = {id(tensor) for tensor in list(module.parameters()) + list(module.buffers())}
    for submodule in module.modules():
        # Lifted constants of an exported program are plain tensor attributes that .to() does not touch.
        for name, value in list(vars(submodule).items()):
            if isinstance(value, torch.Tensor) and id(value) not in registered and value.dtype in _LOW_PRECISION_TORCH:
                setattr(submodule, name, value.to(torch.float64))
    if isinstance(module, torch.fx.GraphModule):
        for node in module.graph.nodes:
            node.args = _to_float64_dtype(node.args)
            node.kwargs = {key: _to_float64_dtype(value) for key, value in node.kwargs.items()}
        module.recompile()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module if exported else module.eval()


def _exported_inputs(program: torch.export.ExportedProgram) -> list[GraphInput]:
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            shape = tuple(dimension(size) for size in value.shape) if value is not None else ()
            integer = value is not None and not value.is_floating_point()
            inputs.append(GraphInput(node.name, shape, integer))
    return inputs


def _example_inputs(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[GraphInput]:
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        names = []
    if len(names) != len(example_inputs):
        names = [f"input{index}" for index in range(len(example_inputs))]
    # The batch dimension is symbolic; the rest is what the example shows.
    return [
        GraphInput(name, ("B", *(int(size) for size in tensor.shape[1:])) if tensor.dim() else (),
                   not tensor.is_floating_point())
        for name, tensor in zip(names, example_inputs, strict=True)
    ]


class TorchVelocity(Velocity):
    """A PyTorch program or module run in float64 under ``torch.no_grad()``.

    ``nn.Module`` without ``example_inputs`` is called as ``module(x, t)`` with t of shape [B]; give example
    inputs (in the module's argument order) when t is [B, 1] or the arguments are in another order.
    """

    def __init__(
        self,
        program_or_module: torch.export.ExportedProgram | torch.nn.Module | str | Path,
        example_inputs: tuple[torch.Tensor, ...] | None = None,
        time_input: str | None = None,
        condition_inputs: tuple[str, ...] = (),
    ) -> None:
        source = program_or_module
        if isinstance(source, (str, Path)):
            self.source = str(source)
            # Refuse archives that would make torch unpickle objects or load native code.
            check_archive_is_safe(Path(source))
            try:
                source = torch.export.load(str(source))
            except Exception as error:  # torch.export.load raises many types for bad archives.
                raise AdmcError(f"{self.source}: cannot read .pt2 program ({type(error).__name__}: {quote(error)})"
                               ) from None
        else:
            self.source = type(source).__name__
        self._state_position = 0
        if isinstance(source, torch.export.ExportedProgram):
            self.signature = identify_signature(_exported_inputs(source), self.source, time_input,
                                                tuple(condition_inputs))
            names = [graph_input.name for graph_input in _exported_inputs(source)]
            module = source.module()
        elif isinstance(source, torch.nn.Module):
            module = source
            if example_inputs is not None:
                inputs = _example_inputs(module, tuple(example_inputs))
                self.signature = identify_signature(inputs, self.source, time_input, tuple(condition_inputs))
                names = [graph_input.name for graph_input in inputs]
            else:
                self.signature = None
                names = ["x", "t"]
        else:
            raise AdmcError(f"{self.source}: expected a torch.export.ExportedProgram, an nn.Module or a .pt2 path")
        if self.signature is not None:
            self._state_position = names.index(self.signature.state_input)
        self._names = names
        # program.module() builds a fresh module that nobody else holds; a user's module is copied.
        self._module = _module_to_float64(module, exported=isinstance(source, torch.export.ExportedProgram))
        self.output_dtype: torch.dtype | None = None

    @property
    def precision_loss(self) -> bool:
        """True when the model returned a lower-precision float: the reference is then not float64-exact."""
        return self.output_dtype is not None and self.output_dtype != torch.float64

    def _arguments(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time = t if self.signature is None or self.signature.time_rank == 1 else t.reshape(-1, 1)
        return (x, time) if self._state_position == 0 else (time, x)

    def _check_output(self, output: Any) -> torch.Tensor:
        if isinstance(output, (tuple, list)) and len(output) == 1:
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise AdmcError(f"{self.source}: the model returned {type(output).__name__}, expected one tensor [B, d]")
        if self.output_dtype is None:
            self.output_dtype = output.dtype
            if self.precision_loss:
                warnings.warn(
                    f"{self.source}: the model computes in {output.dtype} internally; the float64 reference "
                    "is only as accurate as that dtype",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return output

    def _inputs(self, x: torch.Tensor, t: torch.Tensor, conditions: dict[str, np.ndarray]) -> tuple:
        """All inputs in the model's order: x, t and each condition it declares, as given per sample (class
        indices as int64)."""
        if self.signature is None:  # a live module without example inputs is called as (x, t)
            return self._arguments(x, t)
        time = t if self.signature.time_rank == 1 else t.reshape(-1, 1)
        values = {self.signature.state_input: x, self.signature.time_input: time}
        for condition in self.signature.conditions:
            if condition.name not in conditions:
                raise AdmcError(f"{self.source}: condition input '{condition.name}' was not given")
            value = np.asarray(conditions[condition.name]).reshape((x.shape[0], *condition.shape))
            values[condition.name] = torch.from_numpy(
                value.astype(np.int64) if condition.kind == "index" else value.astype(np.float64))
        return tuple(values[name] for name in self._names)

    def _evaluate(self, x: np.ndarray, t: np.ndarray, conditions: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            try:
                output = self._module(*self._inputs(torch.from_numpy(x), torch.from_numpy(t), conditions))
            except AdmcError:
                raise
            except Exception as error:  # a module can raise anything; report it against the source.
                raise AdmcError(f"{self.source}: the model failed on a batch of {x.shape[0]}: {quote(error)}"
                               ) from None
            return self._check_output(output).to(torch.float64).numpy()

    def jacobian(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Per-sample Jacobian ∂f/∂x, [B, d, d], by reverse-mode autograd (samples are independent)."""
        state = torch.from_numpy(np.array(x, dtype=np.float64)).requires_grad_(True)
        time = torch.from_numpy(np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],)).copy())
        with torch.enable_grad():
            output = self._check_output(self._module(*self._arguments(state, time))).to(torch.float64)
            rows = []
            for feature in range(output.shape[1]):
                # Each output row depends only on its own sample, so the batch sum separates the samples.
                (gradient,) = torch.autograd.grad(output[:, feature].sum(), state, retain_graph=True)
                rows.append(gradient)
        return torch.stack(rows, dim=1).numpy()
