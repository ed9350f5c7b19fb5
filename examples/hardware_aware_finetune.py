"""Fine-tune the shipped two-moons model for a measured machine with ``admc.finetune``, rebuild it, compare.

    python examples/hardware_aware_finetune.py                 # hw48, 100 steps (a few minutes on 2 cores)
    python examples/hardware_aware_finetune.py --steps 10      # a quick run

The velocity is computed through the program compiled for aoc-48 with the hw48 calibration, on its twin, and
matched to the source model's own (the teacher objective, docs/finetune.md); the source and the tuned model are
then built for that machine and run on its twin from the same noise, and scored by Wasserstein-2 against fresh
two-moons data (compare the two: they share noise and data).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import admc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_two_moons import two_moons  # noqa: E402

from admc.verify.metrics import wasserstein2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--calibration", default="hw48")
    arguments = parser.parse_args()
    source = HERE / "two_moons.onnx"
    data, fresh = two_moons(4096, np.random.default_rng(0)), two_moons(512, np.random.default_rng(1))
    noise = np.random.default_rng(2).standard_normal((512, 2))
    with tempfile.TemporaryDirectory() as directory:
        tuned = Path(directory) / "tuned.onnx"
        result = admc.finetune(source, data, tuned, "aoc-48", calibration=arguments.calibration,
                               max_steps=arguments.steps, objective="teacher")
        print(f"fine-tuned {result.program.steps} steps (best held-out loss at step {result.program.best_step})")
        for name, model in (("source", source), ("tuned", tuned)):
            bundle = admc.build(model, "aoc-48", Path(directory) / name, calibration=arguments.calibration)
            samples = bundle.simulate(noise, calibration=arguments.calibration, seed=0)
            print(f"{name}: W2 of the machine's samples to fresh data {wasserstein2(samples, fresh):.4f}")


if __name__ == "__main__":
    main()
