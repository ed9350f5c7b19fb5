"""Train the shipped example: an ADM-form flow-matching MLP on a 2-D two-moons distribution.

    python examples/train_two_moons.py            # writes examples/two_moons.onnx and examples/two_moons.pt2

The network has the paper's form (Eq. 2): K = 3 layers L_i(h, t) = W_i tanh(h) + b_i + t·e_i, widths
2 → 32 → 32 → 2, trained with conditional flow matching (Eq. 8) on CPU with fixed seeds, so rerunning the
script reproduces the files. Data come from a closed-form generator (no download).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class AdmLayer(torch.nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.linear = torch.nn.Linear(inputs, outputs)
        self.time = torch.nn.Parameter(torch.zeros(outputs))

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.tanh(h)) + t[:, None] * self.time


class AdmMlp(torch.nn.Module):
    """f(x, t) = L_3 ∘ L_2 ∘ L_1, each with tanh on its input (the ADM form)."""

    def __init__(self, widths: tuple[int, ...] = (2, 32, 32, 2)):
        super().__init__()
        self.layers = torch.nn.ModuleList(AdmLayer(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h, t)
        return h


def two_moons(count: int, generator: np.random.Generator) -> np.ndarray:
    angle = generator.uniform(0, math.pi, count)
    upper = generator.random(count) < 0.5
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x - 0.5, y - 0.25], axis=1) * 1.6
    return points + 0.06 * generator.standard_normal((count, 2))


def fit_flow_matching(model: torch.nn.Module, draw_batch: Callable[[], torch.Tensor], steps: int,
                      learning_rate: float = 3e-3) -> torch.nn.Module:
    """Conditional flow matching on the straight (optimal-transport) path from noise to data: Adam with a
    cosine schedule, ``draw_batch()`` giving each step's data [B, d]. The examples' one training loop."""
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        data = draw_batch()
        noise = torch.randn_like(data)
        t = torch.rand(data.shape[0])
        interpolated = t[:, None] * data + (1 - t[:, None]) * noise
        loss = ((model(interpolated, t) - (data - noise)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def export_velocity_onnx(model: torch.nn.Module, path: Path, d: int = 2) -> Path:
    """``model`` as ONNX: inputs x [B, d] and t [B], output velocity [B, d], batch dynamic."""
    example = (torch.zeros(4, d), torch.zeros(4))
    torch.onnx.export(model, example, path, input_names=["x", "t"], output_names=["velocity"],
                      dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "velocity": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def train(steps: int, seed: int) -> AdmMlp:
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = AdmMlp()
    return fit_flow_matching(model, lambda: torch.as_tensor(two_moons(512, generator), dtype=torch.float32),
                             steps)


def export(model: torch.nn.Module, directory: Path) -> None:
    export_velocity_onnx(model, directory / "two_moons.onnx")
    example = (torch.zeros(4, 2), torch.zeros(4))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, directory / "two_moons.pt2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE)
    arguments = parser.parse_args()
    model = train(arguments.steps, arguments.seed)
    export(model, arguments.output)
    print(f"wrote {arguments.output / 'two_moons.onnx'} and {arguments.output / 'two_moons.pt2'}")


if __name__ == "__main__":
    main()
