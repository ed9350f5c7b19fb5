"""Condition values as a user gives them: ``NAME=VALUE`` null conditions, ``NAME=SPEC`` distributions,
``NAME=FILE.npy`` per-sample arrays, and the guidance options that go with them.

Requires: the model's declared condition inputs (``frontends.signature.ConditionInput``; none for an
unconditional model). Guarantees: every value comes back as an array of the input's dtype (int64 for a
class index, float64 otherwise) and shape; a name that is not a condition input, a malformed value or a
guidance weight without its null condition is an ``AdmcError`` naming the option and the value.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.frontends.signature import ConditionInput


def _names(inputs: tuple[ConditionInput, ...]) -> str:
    return ", ".join(item.name for item in inputs) or "the model has none"


def parse_distribution(text: str, inputs: tuple[ConditionInput, ...]) -> tuple[str, dict]:
    """``NAME=uniform:K`` | ``NAME=one-hot:K`` | ``NAME=normal`` → (name, distribution)."""
    name, _, value = text.partition("=")
    if name not in [condition.name for condition in inputs]:
        raise AdmcError(f"--condition-distribution '{text}': '{name}' is not a condition input ({_names(inputs)})")
    kind, _, classes = value.partition(":")
    if kind == "normal" and not classes:
        return name, {"kind": "normal"}
    if kind in ("uniform", "one-hot") and classes.isdigit() and int(classes) > 0:
        return name, {"kind": kind, "classes": int(classes)}
    raise AdmcError(f"--condition-distribution '{text}': expected NAME=uniform:K, NAME=one-hot:K or NAME=normal")


def parse_null(text: str, inputs: tuple[ConditionInput, ...]) -> tuple[str, np.ndarray]:
    """``NAME=VALUE`` (a class index) or ``NAME=zeros`` → (name, the null condition value)."""
    name, _, value = text.partition("=")
    known = {item.name: item for item in inputs}
    if name not in known:
        raise AdmcError(f"--null-condition '{text}': '{name}' is not a condition input ({_names(inputs)})")
    shape, index = known[name].shape, known[name].kind == "index"
    dtype = np.int64 if index else np.float64
    if value == "zeros":
        return name, np.zeros(shape, dtype=dtype)
    try:
        number = int(value) if index else float(value)
    except ValueError:
        raise AdmcError(f"--null-condition '{text}': VALUE must be a class index, a number or 'zeros'") from None
    return name, np.full(shape, number, dtype=dtype)


def parse_condition_options(inputs: tuple[ConditionInput, ...], null_conditions: dict | list[str] | tuple | None,
                            distributions: dict | list[str] | tuple | None) -> tuple[dict | None, dict | None]:
    """``NAME=VALUE`` / ``NAME=SPEC`` strings (the CLI's) → dictionaries, for the model's condition
    ``inputs``; dictionaries are checked against them and their values given the inputs' dtypes and shapes
    (idempotent)."""
    if isinstance(null_conditions, list | tuple):
        null_conditions = dict(parse_null(text, inputs) for text in null_conditions)
    elif null_conditions is not None:
        known = {condition.name: condition for condition in inputs}
        for name in null_conditions:
            if name not in known:
                raise AdmcError(f"null condition '{name}' is not a condition input ({_names(inputs)})")
        null_conditions = {name: np.asarray(value, dtype=np.int64 if known[name].kind == "index" else np.float64)
                           .reshape(known[name].shape) for name, value in null_conditions.items()}
    if isinstance(distributions, list | tuple):
        distributions = dict(parse_distribution(text, inputs) for text in distributions)
    return null_conditions, distributions


def check_guidance_options(inputs: tuple[ConditionInput, ...], guidance: float | None,
                           null_conditions: dict | None, where: str) -> None:
    """Classifier-free guidance needs its weight W (finite, ≥ 0) and the null condition of its unconditional
    copy together; either without the other is refused naming the missing option."""
    if guidance is None:
        if null_conditions:
            raise AdmcError("--null-condition needs --guidance W (classifier-free guidance)")
        return
    if not null_conditions:
        raise AdmcError(f"{where}: --guidance needs --null-condition NAME=VALUE for the unconditional "
                        f"copy (condition inputs: {_names(inputs)}; VALUE a class index or 'zeros')")
    if not np.isfinite(guidance) or guidance < 0:
        raise AdmcError(f"--guidance must be a finite number ≥ 0, got {guidance}")


def load_condition_files(pairs: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` pairs → arrays (one value per sample)."""
    conditions = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise AdmcError(f"--condition '{pair}': expected NAME=FILE.npy")
        try:
            conditions[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise AdmcError(f"{path}: cannot read condition array for '{name}' ({error})") from None
    return conditions
