"""How far each twin effect moves a conditional bundle's samples from the ideal program, one effect at a time.

    nice python examples/conditional/twin_effects.py out/eight --guidance 3 --samples 128

For each effect set (every effect the bundle's target enables, none, and each enabled effect alone) the twin
draws samples (an equal number per class, seeded noise) and the script prints the mean and largest per-sample
distance to the ideal executor's samples of the same noise and class, the nearest-centre accuracy, and the
per-class figure ``admc verify`` judges: W2(twin, ideal) of the class over W2 of a Gaussian fit of the class's
ideal samples (the ideal program stands in for the reference; the two agree to the ideal link's error). The
class spread (rms distance to the class mean) shows how tight a class is.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from class_figures import class_figures  # noqa: E402
from train_eight_gaussians import CLASSES  # noqa: E402

from admc.bundle.store import Bundle  # noqa: E402
from admc.runtime.simulate import simulate  # noqa: E402
from admc.targets.aoc.twin import all_off, nonidealities_of  # noqa: E402
from admc.verify.metrics import gaussian_baseline, wasserstein2  # noqa: E402


def twin_samples(bundle: Bundle, noise: np.ndarray, labels: np.ndarray, weight: float, effects) -> np.ndarray:
    return simulate(bundle, noise, {"label": labels}, guidance=weight, ideal=False, seed=None, nonidealities=effects)


def class_ratios(samples: np.ndarray, expected: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[float]:
    ratios = []
    for label in range(CLASSES):
        members = np.flatnonzero(labels == label)
        baseline = wasserstein2(gaussian_baseline(expected[members], members.size, seed + 1 + label),
                                expected[members])
        ratios.append(wasserstein2(samples[members], expected[members]) / max(baseline, 1e-300))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--effects", nargs="*", help="effect names to run alone (default: every enabled one)")
    arguments = parser.parse_args()
    bundle = Bundle(arguments.bundle)
    noise = np.random.default_rng(arguments.seed).standard_normal((arguments.samples, 2))
    labels = np.arange(arguments.samples) % CLASSES
    default = nonidealities_of(bundle)
    enabled = [name for name in default.__dataclass_fields__
               if name != "seed" and getattr(default, name).enabled]
    chosen = arguments.effects if arguments.effects is not None else enabled
    sets = [("all enabled", default), ("none", all_off(default))]
    sets += [(f"only {name}", replace(all_off(default), **{name: replace(getattr(default, name), enabled=True)}))
             for name in chosen]
    for weight in arguments.guidance:
        ideal = simulate(bundle, noise, {"label": labels}, guidance=weight, ideal=True)
        figures = class_figures(ideal, labels)
        print(f"W = {weight:g}: ideal mean distance to own centre {figures['mean']:.4f}, "
              f"class spread {figures['spread']:.4f}", flush=True)
        for name, effects in sets:
            samples = twin_samples(bundle, noise, labels, weight, effects)
            deviation = np.linalg.norm(samples - ideal, axis=1)
            figures = class_figures(samples, labels)
            ratios = class_ratios(samples, ideal, labels)
            print(f"  {name:<24} deviation from ideal mean {deviation.mean():.4f} max {deviation.max():.4f}; "
                  f"accuracy {figures['accuracy']:.3f}; own-centre distance {figures['mean']:.4f}; "
                  f"per-class W2 ratio {min(ratios):.2f}–{max(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
