"""A conditional model's training conditions: read, checked against the model, one per sample of the data.

Requires: the model file, its per-sample data count N, and the conditions given (condition input name → a
``.npy`` path or an array). Guarantees: :func:`load_conditioned` returns the source (its condition inputs named
as given, so ``admc build --condition`` of the tuned file reads it the same way) and the conditions as arrays of
the inputs' declared shapes ([N] or [N, 1] class indices as int64 [N], vectors float64 [N, *shape]); a class index
outside the model's embedding table is refused. Every refusal is an ``AdmcError`` naming the file (or the
model) and what is wrong: conditions for an input the model does not have (an unconditional model has none), a
conditional model without its conditions, a file that is not a numeric ``.npy`` array, a wrong shape (the
expected and the given), or a count of rows other than the data's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from admc.compiler.conditions import embedding_classes
from admc.compiler.driver import SourceModel, load_source
from admc.core.errors import AdmcError
from admc.runtime.condition_options import load_condition_files
from admc.runtime.conditioning import ConditioningInterface


def _arrays(conditions: Mapping[str, str | Path | np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """name → (where it came from, the array)."""
    arrays = {}
    for name, value in conditions.items():
        if isinstance(value, np.ndarray):
            arrays[name] = (f"conditions['{name}']", value)
        else:
            arrays[name] = (str(value), load_condition_files([f"{name}={value}"])[name])
    return arrays


def load_conditioned(model: Path, conditions: Mapping[str, str | Path | np.ndarray] | None, samples: int,
                     data: str) -> tuple[SourceModel, dict[str, np.ndarray]]:
    """The source and its checked per-sample conditions ({} for an unconditional model); see the module
    docstring. ``data`` names the samples file in messages."""
    given = _arrays(conditions or {})
    try:
        source = load_source(model, condition_inputs=tuple(given))
    except AdmcError as error:
        if not given:
            raise
        where = ", ".join(place for place, _ in given.values())
        plain = load_source(model)
        if not plain.signature.conditions:
            names = ", ".join(entry.name for entry in plain.graph.inputs)
            raise AdmcError(f"{where}: conditions given, but {model} is an unconditional model (inputs {names}); "
                            "leave out --condition") from None
        raise AdmcError(f"{where}: {error}") from None
    inputs = source.signature.conditions
    missing = [condition.name for condition in inputs if condition.name not in given]
    if missing:
        raise AdmcError(f"{model}: a conditional model (condition inputs {', '.join(missing)}): give each sample's "
                        f"condition with --condition {missing[0]}=FILE.npy, one row per sample of {data}")
    checked = {}
    for condition in inputs:
        where, array = given[condition.name]
        if array.ndim == 0 or array.shape[0] != samples:
            raise AdmcError(f"{where}: condition '{condition.name}' has shape {list(array.shape)}; expected one row "
                            f"per sample of {data} ({samples} rows, each of shape {list(condition.shape)})")
        if array.dtype.hasobject or array.dtype.kind not in "fiub":
            raise AdmcError(f"{where}: condition '{condition.name}' has dtype {array.dtype}; expected numbers")
        value = ConditioningInterface(inputs=(condition,)).check({condition.name: array}, samples, where)
        classes = embedding_classes(source.graph, condition.name) if condition.kind == "index" else None
        value = value[condition.name]
        if classes is not None and (value.min() < 0 or value.max() >= classes):
            raise AdmcError(f"{where}: condition '{condition.name}' holds class indices {int(value.min())}.."
                            f"{int(value.max())}; the model's embedding has classes 0..{classes - 1}")
        checked[condition.name] = value
    return source, checked
