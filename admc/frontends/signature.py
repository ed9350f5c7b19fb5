"""Which model input is the diffusion state x and which is the time t.

Requires: the model's run-time inputs as ``GraphInput`` (name and shape; a dimension is an int when concrete,
a string or None when symbolic).
Condition inputs (class index, condition vector, guidance scale) are named by ``condition_inputs``
(``--condition``), or recognised by an integer type or a name that says so (class, label, cond, context,
guidance); they are set aside before x and t are identified.
Guarantees: a ``Signature`` only when there are exactly two inputs besides the conditions, the time input
has a single feature ([B] or [B, 1]), the state is [B, d] with a concrete d, and every input's batch
dimension B is dynamic (``check_dynamic_batch``: a model exported at a fixed batch builds, but onnxruntime and
torch refuse to run it on verify's and simulate's batches). Anything ambiguous or unsupported raises
``AdmcError`` naming the source and the inputs; an ambiguity asks for ``--time-input``; a fixed batch says how to
export a dynamic one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from admc.core.errors import AdmcError
from admc.frontends.messages import listed
from admc.ir.graph import GraphInput

CONDITION_NAME = re.compile(r"class|label|cond|context|guidance", re.IGNORECASE)


@dataclass(frozen=True)
class ConditionInput:
    """A condition input: ``index`` (integer class index, [B] or [B, 1]) or ``vector`` (float [B, *shape])."""

    name: str
    shape: tuple[int, ...]
    kind: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "kind": self.kind}

    @staticmethod
    def from_dict(data: dict) -> ConditionInput:
        return ConditionInput(str(data["name"]), tuple(int(size) for size in data["shape"]), str(data["kind"]))


@dataclass(frozen=True)
class Signature:
    """The model is called as f(x, t): ``state_input`` is x [B, d], ``time_input`` is t, [B] (rank 1) or
    [B, 1] (rank 2)."""

    state_input: str
    time_input: str
    state_dimension: int
    time_rank: int
    conditions: tuple[ConditionInput, ...] = ()

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(condition.name for condition in self.conditions)


def _is_single_feature(graph_input: GraphInput) -> bool:
    shape = graph_input.shape
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


def _describe_shape(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("?" if size is None else str(size) for size in shape) + "]"


def _condition_input(graph_input: GraphInput, source: str) -> ConditionInput:
    shape = graph_input.shape[1:]
    if any(not isinstance(size, int) or isinstance(size, bool) for size in shape):
        raise AdmcError(f"{source}: condition input '{graph_input.name}' has a dynamic feature size "
                        f"({_describe_shape(graph_input.shape)}); admc needs concrete condition shapes")
    if graph_input.integer:
        if not _is_single_feature(graph_input):
            raise AdmcError(f"{source}: integer condition input '{graph_input.name}' has shape "
                            f"{_describe_shape(graph_input.shape)}; a class index is [B] or [B, 1]")
        return ConditionInput(graph_input.name, tuple(shape), "index")
    return ConditionInput(graph_input.name, tuple(shape), "vector")


def split_conditions(inputs: list[GraphInput], source: str, condition_inputs: tuple[str, ...] | list[str] = (),
                     time_input: str | None = None) -> tuple[list[ConditionInput], list[GraphInput]]:
    """Set the condition inputs aside: named ones, integer ones and ones whose names say so."""
    names = [graph_input.name for graph_input in inputs]
    for name in condition_inputs:
        if name not in names:
            raise AdmcError(f"{source}: --condition '{name}' is not an input of the model; inputs are "
                            f"{listed(names)}")
    conditions, rest = [], []
    for graph_input in inputs:
        named = graph_input.name in condition_inputs
        implied = len(inputs) > 2 and graph_input.name != time_input and (
            graph_input.integer or CONDITION_NAME.search(graph_input.name) is not None)
        if named or implied:
            conditions.append(_condition_input(graph_input, source))
        else:
            rest.append(graph_input)
    return conditions, rest


def _dynamic_batch_fix(source: str, names: list[str]) -> str:
    """How to export ``names`` with a dynamic batch, for the source's format (ONNX file, else torch.export)."""
    if source.endswith(".onnx"):
        axes = ", ".join(f"'{name}': {{0: 'batch'}}" for name in names)
        return f"re-export with torch.onnx.export(..., dynamic_axes={{{axes}}})"
    shapes = ", ".join("{0: batch}" for _ in names)
    return (f"re-export with batch = torch.export.Dim('batch'), torch.export.export(..., "
            f"dynamic_shapes=({shapes})) (a module: example inputs with a batch of at least 2)")


def check_dynamic_batch(inputs: list[GraphInput], source: str) -> None:
    """Refuse inputs whose batch dimension (the first) is a fixed size: the model runs at that batch only.
    ``inputs`` in the model's order (the order of ``dynamic_shapes`` in the fix)."""
    for graph_input in inputs:
        batch = graph_input.shape[0] if graph_input.shape else None
        if isinstance(batch, int) and not isinstance(batch, bool):
            raise AdmcError(f"{source}: input '{graph_input.name}' {_describe_shape(graph_input.shape)} was "
                            f"exported with a fixed batch of {batch}, so it cannot run on other batch sizes; "
                            + _dynamic_batch_fix(source, [item.name for item in inputs]))


def identify_signature(inputs: list[GraphInput], source: str, time_input: str | None = None,
                       condition_inputs: tuple[str, ...] | list[str] = ()) -> Signature:
    """Pick the state, time and condition inputs out of ``inputs``; ``time_input`` names the time input and
    ``condition_inputs`` the conditions explicitly."""
    all_inputs = list(inputs)
    conditions, inputs = split_conditions(inputs, source, tuple(condition_inputs), time_input)
    names = [graph_input.name for graph_input in inputs]
    if len(inputs) != 2:
        raise AdmcError(
            f"{source}: expected 2 inputs (state x [B, d] and time t [B] or [B, 1]) besides conditions, "
            f"found {len(inputs)}: {listed(names)}"
            + ("" if conditions or len(inputs) < 3 else "; name condition inputs with --condition")
        )
    if time_input is not None:
        if time_input not in names:
            raise AdmcError(
                f"{source}: --time-input '{time_input}' is not an input of the model; "
                f"inputs are {listed(names)}"
            )
        time = next(graph_input for graph_input in inputs if graph_input.name == time_input)
        if not _is_single_feature(time):
            raise AdmcError(
                f"{source}: time input '{time.name}' has shape {_describe_shape(time.shape)}; "
                "expected [B] or [B, 1]"
            )
    else:
        candidates = [graph_input for graph_input in inputs if _is_single_feature(graph_input)]
        if len(candidates) != 1:
            which = "both" if candidates else "neither"
            shapes = ", ".join(f"{item.name} {_describe_shape(item.shape)}" for item in inputs)
            raise AdmcError(
                f"{source}: cannot tell the time input: {which} of the inputs ({shapes}) has a single "
                "feature ([B] or [B, 1]); name it with --time-input"
            )
        time = candidates[0]
    state = next(graph_input for graph_input in inputs if graph_input is not time)
    if len(state.shape) != 2:
        raise AdmcError(
            f"{source}: state input '{state.name}' has shape {_describe_shape(state.shape)}; expected [B, d]"
        )
    feature_size = state.shape[1]
    # bool is an int subclass; a concrete feature size is a positive Python int only.
    if not isinstance(feature_size, int) or isinstance(feature_size, bool) or feature_size <= 0:
        raise AdmcError(
            f"{source}: state input '{state.name}' has a dynamic feature size "
            f"({_describe_shape(state.shape)}); admc needs a concrete d in [B, d]"
        )
    check_dynamic_batch(all_inputs, source)
    return Signature(
        state_input=state.name,
        time_input=time.name,
        state_dimension=feature_size,
        time_rank=len(time.shape),
        conditions=tuple(conditions),
    )
