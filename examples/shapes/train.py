"""Train the twelve shipped shape models: ADM-form flow-matching MLPs, one per shape of ``shapes.py``.

    nice python examples/shapes/train.py                 # all twelve → examples/shapes/models/<shape>.onnx
    nice python examples/shapes/train.py --shapes A star # a subset

Each model is the paper's ADM form (Eq. 2, the network of ``examples/train_two_moons.py``), widths
2 → 32 → 32 → 2: a state of 66 channels whose three non-zero blocks (32×32, 32×2 and 2×32) fit two 48×48
aoc-48 modules. Training is conditional flow matching (Eq. 8) on the optimal-transport (straight-line)
path x_t = (1 − t)·x₀ + t·x₁ with target velocity x₁ − x₀, x₀ ~ N(0, I), x₁ from the shape's sampler,
on CPU with one thread and fixed seeds, so rerunning the script reproduces the files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from shapes import SHAPES, sample  # noqa: E402
from train_two_moons import AdmMlp, export_velocity_onnx, fit_flow_matching  # noqa: E402  (one definition each)

WIDTHS = (2, 32, 32, 2)
MODELS = HERE / "models"


def train(shape: str, steps: int, seed: int, batch: int = 512, widths: tuple[int, ...] = WIDTHS) -> AdmMlp:
    torch.manual_seed(seed)
    model = AdmMlp(widths)
    # One pool of data points drawn once (the sampler is deterministic given its seed), re-batched per step.
    pool = torch.as_tensor(sample(shape, 200_000, seed), dtype=torch.float32)
    return fit_flow_matching(model, lambda: pool[torch.randint(pool.shape[0], (batch,))], steps)


def export(model: torch.nn.Module, path: Path) -> None:
    export_velocity_onnx(model, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=WIDTHS[1], help="width of both hidden layers")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    arguments.output.mkdir(parents=True, exist_ok=True)
    for shape in arguments.shapes:
        started = time.perf_counter()
        widths = (2, arguments.hidden, arguments.hidden, 2)
        model = train(shape, arguments.steps, arguments.seed, widths=widths)
        export(model, arguments.output / f"{shape}.onnx")
        print(f"{shape}: trained {arguments.steps} steps in {time.perf_counter() - started:.1f} s → "
              f"{arguments.output / f'{shape}.onnx'}", flush=True)


if __name__ == "__main__":
    main()
