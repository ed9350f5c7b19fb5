"""``admc.build`` and ``admc.reference``: what the public API does with a trained model.

Requires: a model given as a path to an ``.onnx`` or ``.pt2`` file, a ``torch.export.ExportedProgram``, or a
``torch.nn.Module`` (``build`` then needs ``example_inputs``). Guarantees: ``build`` writes the bundle the
compiler driver writes for the same options (byte-identical to ``admc build``) and returns it loaded as a
:class:`~admc.api.bundle_handle.Bundle`; ``reference`` returns the final samples of the source model run by
the float64 reference executor. A model of another type and an option ``build`` does not take are refused
with an ``AdmcError`` naming them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from admc.api.bundle_handle import Bundle
from admc.compiler import driver
from admc.core.errors import AdmcError
from admc.runtime.reference import run_reference

Model = str | os.PathLike | torch.nn.Module | torch.export.ExportedProgram


def _check_model(model: Any) -> None:
    if not isinstance(model, (str, os.PathLike, torch.nn.Module, torch.export.ExportedProgram)):
        raise AdmcError(f"model: expected a path to an .onnx or .pt2 file, a torch.export.ExportedProgram or a "
                        f"torch.nn.Module (with example_inputs), got {type(model).__name__}")


def build(model: Model, target: str | os.PathLike = "aoc-48", output: str | os.PathLike | None = None,
          **options: Any) -> Bundle:
    """Compile ``model`` for ``target`` (a preset name such as ``"aoc-48"``, ``"ideal"``, ``"rram-128"``, or a
    target YAML file) and return the written bundle, loaded.

    ``output``: the bundle's directory (an existing bundle there is replaced atomically; any other existing
    path is refused). None writes it into a fresh temporary directory that lives as long as the returned
    :class:`Bundle` (it is removed when the object is garbage-collected): a notebook can try a build without
    choosing a path, and a build meant to be kept names its folder.

    ``options`` are ``admc build``'s, by their Python names: ``solver`` (None: the target's default),
    ``steps`` (16), ``grid`` (time points, overriding ``steps``), ``fp_iterations``, ``time_input``,
    ``layout`` (``"auto"``, ``"packed"``, ``"ring"``), ``example_inputs`` (for an ``nn.Module``: ``(x [B, d],
    t [B])``), ``calibration`` (a measured machine to compile for: ``"hw48"``, ``"hw16"`` or a file),
    ``condition_inputs``, ``guidance`` with ``null_conditions`` (``{"label": 8}``), ``distributions``
    (``{"label": {"kind": "uniform", "classes": 8}}`` or ``["label=uniform:8"]``), ``alpha`` (``"auto"``,
    ``"global"``, ``"min"`` or a ``.npy`` table) and ``force`` (the fields of
    ``admc.compiler.build_options.BuildOptions``; an unknown one is refused naming it).
    """
    _check_model(model)
    if output is not None:
        return Bundle(driver.build(model, output, target=target, **options))
    workspace = tempfile.TemporaryDirectory(prefix="admc-bundle-")
    try:
        path = driver.build(model, Path(workspace.name) / "bundle", target=target, **options)
        return Bundle(path, keep_alive=workspace)
    except BaseException:
        workspace.cleanup()
        raise


def reference(model: Model, noise: np.ndarray, solver: str = "implicit-euler", steps: int = 16,
              grid: Sequence[float] | np.ndarray | None = None, fp_iterations: int | None = None,
              conditions: Mapping[str, Any] | None = None, guidance: float | None = None,
              null_conditions: Mapping[str, Any] | Sequence[str] | None = None,
              time_input: str | None = None) -> np.ndarray:
    """The final samples [B, d] of the source ``model`` integrated from ``noise`` [B, d] in float64: what a
    compiled program is verified against (``admc reference``).

    ``solver``: ``explicit-euler``, ``heun``, ``implicit-euler`` (solved to a tight residual),
    ``crank-nicolson`` or ``continuous``, on ``steps`` uniform steps t_n = n / steps or on ``grid``;
    ``fp_iterations`` N runs exactly N fixed-point iterations per implicit step (the explicit-Euler warm start
    counted as the first) instead of solving. ``conditions``: per-sample values of the model's condition
    inputs (``{"label": array of class indices}``); ``guidance`` W with ``null_conditions`` runs
    classifier-free guidance (1 + W)·f(x, t, c) − W·f(x, t, ∅). Final samples, not the trajectory, so the
    result compares directly with :meth:`Bundle.simulate`.
    """
    _check_model(model)
    run_conditions = None if conditions is None else {name: np.asarray(value) for name, value in conditions.items()}
    result = run_reference(model, np.asarray(noise, dtype=np.float64), solver, steps if grid is None else grid,
                           fp_iterations=fp_iterations, time_input=time_input, conditions=run_conditions,
                           guidance=guidance, null_conditions=null_conditions)
    return result.samples
