"""Nearest-class-centre accuracy and sharpening of a conditional eight-Gaussians bundle's samples, per guidance
weight, beside what the exact flow gives for the same noise and labels.

    nice python examples/conditional/evaluate_guidance.py out/eight --guidance 3 0 [--ideal]

For each W (run-time guidance: the bundle's gains are rescaled, no rebuild) the twin (or, with ``--ideal``,
the ideal executor) draws ``--samples`` samples, an equal number per class, from seeded noise, and the script
prints ``class_figures``: accuracy, mean and median distance to the own centre, within-class spread. The
``exact`` line integrates the data's exact guided velocity (``exact_flow.py``): a perfect model's figures.
Guidance should lower the spread; on these data it moves classes outward, so the distance to the centre may
rise with it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from class_figures import class_figures  # noqa: E402
from exact_flow import sample as exact_sample  # noqa: E402
from train_eight_gaussians import CLASSES  # noqa: E402

from admc.runtime.simulate import simulate  # noqa: E402


def describe(figures: dict[str, float]) -> str:
    return (f"nearest-centre accuracy {figures['accuracy']:.4f}, mean distance to own centre {figures['mean']:.4f} "
            f"(median {figures['median']:.4f}), within-class spread {figures['spread']:.4f}")


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
        print(f"W = {weight:g} ({executor}): {describe(class_figures(samples, labels))} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"W = {weight:g} (exact): {describe(class_figures(exact_sample(noise, labels, weight), labels))}",
              flush=True)


if __name__ == "__main__":
    main()
