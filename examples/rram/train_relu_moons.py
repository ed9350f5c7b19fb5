"""Train the RRAM example: a ReLU flow-matching MLP with random Fourier time features on two moons, with and
without multiplicative weight noise (the noise-aware training of Yang et al.; docs/design.md, Sources; in small).

    nice python examples/rram/train_relu_moons.py   # writes relu_moons_noise_aware.onnx and relu_moons_plain.onnx

The network is 2 → 32 → 32 → 2 with ReLU; the time t enters through fixed random Fourier features
[sin 2π t ω, cos 2π t ω] (8 frequencies ω ~ N(0, 1)) concatenated with x, which the compiler evaluates at
compile time and the RRAM target drives through its DACs. Noise-aware training multiplies every weight by
(1 + σ ε), ε ~ N(0, 1) drawn afresh for every batch (σ = --weight-noise), so the network learns a velocity
that tolerates the chip's static programming error. Both models see the same data, seeds and steps, on the
CPU with one thread, so rerunning the script reproduces the files.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from train_two_moons import export_velocity_onnx, fit_flow_matching, two_moons  # noqa: E402  (one definition each)

FEATURES = 8
HIDDEN = 32


class NoisyLinear(nn.Linear):
    """A linear layer whose weights are multiplied by (1 + σ ε) in training when σ > 0."""

    weight_noise = 0.0

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.training and self.weight_noise > 0:
            weight = weight * (1 + self.weight_noise * torch.randn_like(weight))
        return functional.linear(value, weight, self.bias)


class FourierReluMlp(nn.Module):
    def __init__(self, weight_noise: float = 0.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("frequencies", torch.randn(FEATURES, generator=generator))
        self.first = NoisyLinear(2 + 2 * FEATURES, HIDDEN)
        self.second = NoisyLinear(HIDDEN, HIDDEN)
        self.last = NoisyLinear(HIDDEN, 2)
        for layer in (self.first, self.second, self.last):
            layer.weight_noise = weight_noise

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[:, None] * self.frequencies
        features = torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1)
        hidden = torch.relu(self.first(features))
        return self.last(torch.relu(self.second(hidden)))


def train(weight_noise: float, steps: int, seed: int) -> FourierReluMlp:
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = FourierReluMlp(weight_noise, seed)
    return fit_flow_matching(model, lambda: torch.as_tensor(two_moons(512, generator), dtype=torch.float32),
                             steps)


def export(model: nn.Module, path: Path) -> None:
    export_velocity_onnx(model, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-noise", type=float, default=0.2, help="σ of the multiplicative weight noise")
    parser.add_argument("--output", type=Path, default=HERE)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    for name, noise in (("noise_aware", arguments.weight_noise), ("plain", 0.0)):
        path = arguments.output / f"relu_moons_{name}.onnx"
        export(train(noise, arguments.steps, arguments.seed), path)
        print(f"wrote {path} (weight noise σ = {noise:g})")


if __name__ == "__main__":
    main()
