"""Run the *source* model (the user's ONNX file or PyTorch program) as a float64 velocity function.

Requires: an ONNX file, a ``.pt2`` file written by ``torch.export.save``, a ``torch.export.ExportedProgram``
or an ``nn.Module``, whose inputs are the state x [B, d], the time t ([B] or [B, 1]) and any named conditions.
Guarantees: ``make_velocity`` returns a ``Velocity`` (``velocity.py``) computed in float64 end to end where the
model allows it: ONNX models by onnxruntime after a float64 rewrite (``onnx_velocity.py``), PyTorch programs and
modules by torch in float64 (``torch_velocity.py``). A missing file, or one of another format
(``admc.frontends.model_file``), is an ``AdmcError`` naming the path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from admc.core.errors import AdmcError
from admc.frontends.model_file import ONNX, model_format
from admc.runtime.onnx_velocity import OnnxVelocity
from admc.runtime.torch_velocity import TorchVelocity
from admc.runtime.velocity import Velocity


def make_velocity(
    model_path_or_module: str | Path | torch.nn.Module | torch.export.ExportedProgram,
    time_input: str | None = None,
    condition_inputs: tuple[str, ...] = (),
) -> Velocity:
    """``OnnxVelocity`` for ``.onnx`` paths; ``TorchVelocity`` for ``.pt2`` paths, modules and programs."""
    conditions = tuple(condition_inputs)
    if isinstance(model_path_or_module, (torch.nn.Module, torch.export.ExportedProgram)):
        return TorchVelocity(model_path_or_module, time_input=time_input, condition_inputs=conditions)
    path = Path(model_path_or_module)
    if not path.exists():
        raise AdmcError(f"{path}: no such model file")
    if model_format(path) == ONNX:
        return OnnxVelocity(path, time_input=time_input, condition_inputs=conditions)
    return TorchVelocity(path, time_input=time_input, condition_inputs=conditions)
