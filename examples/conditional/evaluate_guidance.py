"""Nearest-class-centre accuracy of a conditional eight-Gaussians bundle's samples, per guidance weight.

    nice python examples/conditional/evaluate_guidance.py out/eight_gaussians --guidance 3 0 [--ideal]

For each W (run-time guidance: the bundle's gains are rescaled, no rebuild) the twin (or, with ``--ideal``,
the ideal executor) draws ``--samples`` samples, an equal number per class, from seeded noise; a sample is
correct when the nearest of the eight centres is its own class's. Also prints the mean distance to the own
centre (and its median, which a few far samples do not move) and the within-class spread (RMS distance to the
class mean): guidance should lower them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_eight_gaussians import CLASSES, centres  # noqa: E402

from admc.conditional_run import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0, 0.0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--ideal", action="store_true")
    arguments = parser.parse_args()
    noise = np.random.default_rng(arguments.seed).standard_normal((arguments.samples, 2))
    labels = np.arange(arguments.samples) % CLASSES
    executor = "ideal" if arguments.ideal else "twin"
    for weight in arguments.guidance:
        start = time.perf_counter()
        samples = simulate(arguments.bundle, noise, {"label": labels}, guidance=weight, ideal=arguments.ideal)
        distances = np.linalg.norm(samples[:, None, :] - centres()[None], axis=2)
        accuracy = float(np.mean(np.argmin(distances, axis=1) == labels))
        own_distances = distances[np.arange(labels.size), labels]
        own, median = float(np.mean(own_distances)), float(np.median(own_distances))
        spread = float(np.mean([np.sqrt(np.mean(np.sum((samples[labels == k] - samples[labels == k].mean(0)) ** 2,
                                                             axis=1))) for k in range(CLASSES)]))
        print(f"W = {weight:g} ({executor}): nearest-centre accuracy {accuracy:.4f}, mean distance to own centre "
              f"{own:.4f} (median {median:.4f}), within-class spread {spread:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
