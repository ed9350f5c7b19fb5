"""``admc.finetune``: fine-tune a model through its compiled program on a target's twin (``admc finetune``).

Requires: a model file (``.onnx`` or ``.pt2``), training samples ([N, d] array or ``.npy`` file) and, for a
conditional model, each sample's conditions, an output path with the source's suffix. Guarantees: what
``admc finetune`` writes for the same arguments (the same bytes), returned as a
:class:`~admc.finetuning.run.FinetuneResult` (the output path, the program fit's and the digital control's steps,
held-out losses and weights); bad input is an ``AdmcError`` and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from admc.finetuning.objectives import FLOW_MATCHING
from admc.finetuning.run import FinetuneResult
from admc.finetuning.run import finetune as run_finetune


def finetune(model: str | os.PathLike, data: str | os.PathLike | np.ndarray, output: str | os.PathLike,
             target: str | os.PathLike = "aoc-48", *, calibration: str | os.PathLike | None = None,
             max_steps: int = 200, seed: int = 0, objective: str = FLOW_MATCHING, workers: int = 1,
             address: str | None = None, rebuild: bool = True,
             conditions: Mapping[str, str | os.PathLike | np.ndarray] | None = None, guidance: float | None = None,
             null_conditions: Mapping[str, Any] | Sequence[str] | None = None, solver: str | None = None,
             steps: int = 16, fp_iterations: int | None = None) -> FinetuneResult:
    """Fine-tune ``model`` for ``target`` (and the measured machine ``calibration``: ``"hw48"``, ``"hw16"`` or a
    file) on ``data`` and write the tuned model at ``output``; ``objective`` ``"flow-matching"`` (the data's
    x₁ − x₀) or ``"teacher"`` (the source model's own velocity at the same states); ``workers`` > 1 or a Ray
    cluster's ``address``: each step's gradient computed data-parallel on Ray; ``rebuild`` False: select through
    the structure compiled for the source instead of recompiling at each evaluation; a conditional model's
    ``conditions`` (input name → one value per sample of ``data``: an array or ``.npy`` file) and its build's
    ``guidance`` W and ``null_conditions`` (``{"label": 8}``) as for ``admc.build``; ``solver``, ``steps`` and
    ``fp_iterations``: the build's schedule, as for ``admc.build`` (fine-tune the structure you will build); see
    docs/finetune.md."""
    return run_finetune(model, data, output, target, calibration=calibration, max_steps=max_steps, seed=seed,
                        objective=objective, workers=workers, address=address, rebuild=rebuild,
                        conditions=conditions, guidance=guidance, null_conditions=null_conditions,
                        solver=solver, steps=steps, fp_iterations=fp_iterations)
