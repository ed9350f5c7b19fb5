"""Noise-aware training on the RRAM twin: W2 of twin samples against the continuous reference, per chip.

    nice .venv/bin/python benchmarks/rram_noise_aware.py [--chips 5] [--samples 512] [--models DIRECTORY]

Builds examples/rram/relu_moons_{noise_aware,plain}.onnx for rram-128 (continuous solver), runs the source
model with the continuous reference (DOP853) and the twin on several chips (seeds), and prints W2(twin,
reference) per chip with mean and standard deviation, and the W2 of a Gaussian fitted to the reference.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.runtime.reference import run_reference
from admc.targets.rram.twin import RramTwin
from admc.verify.metrics import gaussian_baseline, wasserstein2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rram"


def twin_distances(model: Path, chips: int, samples: int, directory: Path) -> dict:
    bundle = Bundle(build(model, directory / model.stem, target="rram", steps=16))
    noise = np.random.default_rng(0).standard_normal((samples, 2))
    reference = run_reference(model, noise, "continuous", bundle.manifest["solver"]["grid"]).samples
    distances = [wasserstein2(RramTwin(bundle, seed=seed).run(noise)[-1], reference) for seed in range(chips)]
    baseline = wasserstein2(gaussian_baseline(reference, samples, 1), reference)
    return {"w2": np.array(distances), "gaussian": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=5)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--models", type=Path, default=EXAMPLES, help="directory of relu_moons_*.onnx")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for name in ("noise_aware", "plain"):
            result = twin_distances(arguments.models / f"relu_moons_{name}.onnx", arguments.chips, arguments.samples,
                                    Path(directory))
            w2 = result["w2"]
            print(f"{name:<12} twin W2 per chip {np.array2string(w2, precision=4)}; mean {w2.mean():.4f} ± "
                  f"{w2.std():.4f}; Gaussian fit {result['gaussian']:.4f}")


if __name__ == "__main__":
    main()
