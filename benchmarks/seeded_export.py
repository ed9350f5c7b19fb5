"""Seeded weights and an ONNX export with a dynamic batch, for the benchmarks' synthetic models.

Requires: a torch module whose forward takes (x [B, state], t [B]). Guarantees: every parameter is drawn
from N(0, 1) in float64 from ``seed``, scaled by ``scale`` / √fan-in, so a model is the same on every
machine; the file has inputs ``x``, ``t``, output ``velocity`` and a dynamic batch axis, in one file.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path


def seed_and_export(module, state: int, path: Path, seed: int, scale: float) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter.shape[-1] if parameter.dim() > 1 else max(parameter.numel(), 1)
            values = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_((scale * values / math.sqrt(fan_in)).to(parameter.dtype))
    module.eval()
    inputs = (torch.randn(4, state, generator=generator), torch.rand(4, generator=generator))
    axes = {name: {0: "batch"} for name in ("x", "t", "velocity")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=["x", "t"], output_names=["velocity"],
                          dynamic_axes=axes, opset_version=17, dynamo=False, external_data=False)
    return path
