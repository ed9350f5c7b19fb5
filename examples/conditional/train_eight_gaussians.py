"""Train the conditional example: a class-conditional ADM-form flow-matching MLP on eight labelled Gaussians.

    nice python examples/conditional/train_eight_gaussians.py   # writes examples/conditional/eight_gaussians.onnx
    nice python examples/conditional/train_eight_gaussians.py --sigma aoc-48 --width 48 --steps 20000 \
        --batch 2048 --weight-noise 0.04   # writes examples/conditional/eight_gaussians_aoc_48_sigma.onnx

Data: eight Gaussians (standard deviation 0.1) centred on a circle of radius 1.5; a point's label is the index
of its Gaussian (0-7). The network has the ADM form (Eq. 2), widths 2 → w → w → 2 (``--width``, 32 by
default), with the class read through an embedding table added to the first layer:
L_1(x, t, c) = W_1 tanh(x) + b_1 + t·e_1 + E[c].
Trained with conditional flow matching and condition dropout (15% of labels replaced by the null token 8,
the table's last row) so one model gives both f(x, t, c) and f(x, t, ∅) for classifier-free guidance.
With ``--sigma aoc-48`` every tanh is the σ aoc-48 declares its LEDs are driven with instead, the algebraic
sigmoid u / (1 + |u|^c)^(1/c) with the preset's calibrated c, written out so the export carries it as
elementary ops; admc recognises it (``passes/fuse_algebraic_sigmoid.py``) and aoc-48 computes it exactly, so
the σ-shape compensation a tanh model needs does not apply. ``--weight-noise r`` trains through weights
multiplied by 1 + r·N(0, 1), drawn afresh each step (the gradient is taken at the perturbed weights and applied
to the clean ones): the machine's static per-pixel weight error is such a factor (aoc-48: r = 0.0128), and a
model trained through a few times that loses less to it (measurements in the README).
CPU, fixed seeds, one thread: rerunning the script reproduces the file.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
CLASSES = 8
NULL_TOKEN = CLASSES
RADIUS = 1.5
SPREAD = 0.1
DROPOUT = 0.15


def centres() -> np.ndarray:
    angles = 2 * math.pi * np.arange(CLASSES) / CLASSES
    return RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def eight_gaussians(count: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = generator.integers(0, CLASSES, count)
    return centres()[labels] + SPREAD * generator.standard_normal((count, 2)), labels


def machine_exponent(target: str) -> float:
    from admc.targets.loader import load_target

    return float(load_target(target).nonidealities.nonlinearity.exponent)


class ConditionalAdmMlp(torch.nn.Module):
    """f(x, t, c): three ADM layers W_i σ(h) + b_i + t·e_i, the class embedding added to the first; σ = tanh,
    or the algebraic sigmoid with ``exponent``."""

    def __init__(self, widths: tuple[int, ...] = (2, 32, 32, 2), exponent: float | None = None):
        super().__init__()
        self.exponent = exponent
        self.linears = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.times = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(size)) for size in widths[1:])
        self.embedding = torch.nn.Embedding(CLASSES + 1, widths[1])

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        if self.exponent is None:
            return torch.tanh(h)
        return h / (1.0 + h.abs() ** self.exponent) ** (1.0 / self.exponent)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.linears[0](self.sigma(x)) + t[:, None] * self.times[0] + self.embedding(label)
        for linear, time in zip(self.linears[1:], self.times[1:], strict=True):
            h = linear(self.sigma(h)) + t[:, None] * time
        return h


def perturb_weights(model: ConditionalAdmMlp, relative_std: float) -> list[torch.Tensor]:
    """Multiply every linear layer's weights by 1 + relative_std·N(0, 1); returns the clean weights."""
    clean = [linear.weight.detach().clone() for linear in model.linears]
    if relative_std > 0:
        with torch.no_grad():
            for linear in model.linears:
                linear.weight.mul_(1 + relative_std * torch.randn_like(linear.weight))
    return clean


def restore_weights(model: ConditionalAdmMlp, clean: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for linear, weight in zip(model.linears, clean, strict=True):
            linear.weight.copy_(weight)


def train(steps: int, seed: int, exponent: float | None = None, width: int = 32, batch: int = 512,
          weight_noise: float = 0.0) -> ConditionalAdmMlp:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    generator = np.random.default_rng(seed)
    model = ConditionalAdmMlp(widths=(2, width, width, 2), exponent=exponent)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        points, labels = eight_gaussians(batch, generator)
        dropped = generator.random(labels.size) < DROPOUT
        labels = np.where(dropped, NULL_TOKEN, labels)
        data = torch.as_tensor(points, dtype=torch.float32)
        label = torch.as_tensor(labels, dtype=torch.int64)
        noise = torch.randn_like(data)
        t = torch.rand(data.shape[0])
        interpolated = t[:, None] * data + (1 - t[:, None]) * noise
        clean = perturb_weights(model, weight_noise)
        loss = ((model(interpolated, t, label) - (data - noise)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        restore_weights(model, clean)
        optimiser.step()
        schedule.step()
    return model.eval()


def export(model: torch.nn.Module, path: Path) -> None:
    example = (torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, dtype=torch.int64))
    axes = {name: {0: "batch"} for name in ("x", "t", "label", "velocity")}
    torch.onnx.export(model, example, path, input_names=["x", "t", "label"], output_names=["velocity"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=32, help="hidden width of both hidden layers")
    parser.add_argument("--batch", type=int, default=512, help="training points per step")
    parser.add_argument("--weight-noise", type=float, default=0.0,
                        help="relative std of the multiplicative weight noise trained through (0: none)")
    parser.add_argument("--sigma", default="tanh", help="tanh, or a target whose declared σ shape to train with")
    parser.add_argument("--output", type=Path, default=None)
    arguments = parser.parse_args()
    exponent = None if arguments.sigma == "tanh" else machine_exponent(arguments.sigma)
    suffix = "" if exponent is None else "_" + arguments.sigma.replace("-", "_") + "_sigma"
    name = f"eight_gaussians{suffix}.onnx"
    model = train(arguments.steps, arguments.seed, exponent, arguments.width, arguments.batch,
                  arguments.weight_noise)
    output = arguments.output or HERE / name
    export(model, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
