"""Which samples of a guided conditional bundle the twin moves farthest from the ideal program, and from where.

    nice python examples/conditional/overshoot.py out/eight --guidance 3 --samples 256 --worst 12

Draws an equal number of samples per class from seeded noise, runs the ideal executor and the twin on the same
noise and conditions, and prints the samples with the largest deviation (noise radius, final radius on each
executor, class), the mean and median deviation, the correlation of deviation with the noise radius, and the
mean deviation per quartile of the noise radius: the figures behind the README's note on overshooting samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_eight_gaussians import CLASSES  # noqa: E402

from admc.runtime.simulate import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--worst", type=int, default=12)
    arguments = parser.parse_args()
    noise = np.random.default_rng(arguments.seed).standard_normal((arguments.samples, 2))
    labels = np.arange(arguments.samples) % CLASSES
    conditions = {"label": labels}
    ideal = simulate(arguments.bundle, noise, conditions, guidance=arguments.guidance, ideal=True)
    twin = simulate(arguments.bundle, noise, conditions, guidance=arguments.guidance, ideal=False)
    deviation = np.linalg.norm(twin - ideal, axis=1)
    noise_radius = np.linalg.norm(noise, axis=1)
    for index in np.argsort(-deviation)[:arguments.worst]:
        print(f"class {labels[index]}: noise radius {noise_radius[index]:.2f}, final radius ideal "
              f"{np.linalg.norm(ideal[index]):.2f} twin {np.linalg.norm(twin[index]):.2f}, deviation "
              f"{deviation[index]:.3f}")
    print(f"deviation: mean {deviation.mean():.4f}, median {np.median(deviation):.4f}, largest {deviation.max():.4f}; "
          f"correlation with the noise radius {np.corrcoef(deviation, noise_radius)[0, 1]:.2f}")
    edges = np.quantile(noise_radius, [0.0, 0.25, 0.5, 0.75, 1.0])
    quartiles = np.clip(np.searchsorted(edges, noise_radius, side="right") - 1, 0, 3)
    print("mean deviation per noise-radius quartile: "
          + ", ".join(f"{float(deviation[quartiles == q].mean()):.4f}" for q in range(4)))


if __name__ == "__main__":
    main()
