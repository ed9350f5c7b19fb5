"""How far σ approximations alone move a conditional program's samples: the guided example's sensitivity.

    nice python examples/conditional/sigma_sensitivity.py --guidance 3 0 --samples 256

Compiles the example for the ideal target, then runs its program with the ideal executor twice per variant: once as
compiled (tanh) and once with σ replaced on every tanh channel, nothing else changed (no noise, no weight error, no
quantisation). Variants: the machine's algebraic sigmoid s of aoc-48 uncompensated; k·s with the per-channel output
scale k the AOC build fits (``sigma_shape.fit_output_scales``); k·s(g·u) with one input gain g per hidden group and
k refitted at it (tried for the AOC build and not adopted: see docs/conditioning-and-guidance.md); and tanh with
every activation 1 % and 3 % too large or small, a yardstick for any analog gain error. For each it prints the mean,
median and largest distance of a sample from the compiled program's sample of the same noise and class, and the per-
class figure ``admc verify`` judges (W2 of the class against the program's samples over W2 of a Gaussian fit of the
class), so the figures say which per-class fidelity σ errors of a given size allow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from class_figures import class_figures  # noqa: E402
from train_eight_gaussians import CLASSES  # noqa: E402

from admc.compiler.calibration_drive import calibration_drive  # noqa: E402
from admc.compiler.driver import BuildOptions, compile_source, load_source  # noqa: E402
from admc.runtime.executor import IdealExecutor  # noqa: E402
from admc.targets.aoc.operating_point import record_states  # noqa: E402
from admc.targets.aoc.sigma_shape import algebraic_sigmoid, fit_output_scales  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402
from admc.verify.metrics import gaussian_baseline, wasserstein2  # noqa: E402

# s is steeper than tanh away from 0, so a loop relaxed for tanh may not settle with it; α never moves a
# fixed point, so every variant runs at α ≥ this.
ALPHA_FLOOR = 0.6
INPUT_GAINS = np.linspace(0.6, 1.0, 81)
UNBOUNDED = (-np.inf, np.inf)


class ReplacedSigma(IdealExecutor):
    """The ideal executor with σ on the tanh channels replaced by ``sigma(arguments, channel indices)``."""

    def __init__(self, *arguments, sigma, tanh_channels: np.ndarray, **options):
        super().__init__(*arguments, **options)
        self.sigma, self.tanh_channels = sigma, tanh_channels

    def _activated(self, state: np.ndarray) -> np.ndarray:
        activated = super()._activated(state)
        if self.sigma is not None:
            activated[:, self.tanh_channels] = self.sigma(state[:, self.tanh_channels])
        return activated


def group_input_gains(arguments: np.ndarray, group_columns: list[np.ndarray], exponent: float) -> np.ndarray:
    """One g per group (columns of ``arguments``): least squares k per channel at each candidate g, the g with
    the smallest summed squared error of k·s(g·u) − tanh(u)."""
    wanted = np.tanh(arguments)
    errors = []
    for gain in INPUT_GAINS:
        machine = algebraic_sigmoid(gain * arguments, exponent)
        scale = np.clip(np.sum(machine * wanted, 0) / np.maximum(np.sum(machine * machine, 0), 1e-300), 0.5, 1.0)
        errors.append(np.sum((scale * machine - wanted) ** 2, axis=0))
    errors = np.array(errors)
    gains = np.ones(arguments.shape[1])
    for columns in group_columns:
        gains[columns] = INPUT_GAINS[int(np.argmin(errors[:, columns].sum(axis=1)))]
    return gains


def per_class_ratios(samples: np.ndarray, program: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    ratios = []
    for label in range(CLASSES):
        members = labels == label
        baseline = wasserstein2(gaussian_baseline(program[members], int(members.sum()), seed + 1 + label),
                                program[members])
        ratios.append(wasserstein2(samples[members], program[members]) / max(baseline, 1e-300))
    return np.array(ratios)


def study(guidance: float, samples: int, seed: int, exponent: float) -> None:
    source = load_source(HERE / "eight_gaussians.onnx", None, None, ())
    compiled = compile_source(source, load_target("ideal"), BuildOptions(
        solver="crank-nicolson", steps=16, guidance=guidance, null_conditions=["label=8"]))
    program = compiled.program
    tanh = np.concatenate([np.arange(group.offset, group.stop) for group in program.groups
                           if group.activation == "tanh"])
    # The arguments σ sees, recorded exactly as the AOC build records them for its fit (ideal target: σ gain 1).
    arguments = record_states(program, compiled.schedule, compiled.alpha,
                              extra_drive=calibration_drive(compiled, samples=64, seed=0))[:, tanh]
    ones = np.ones(tanh.size, dtype=bool)
    scale = fit_output_scales(arguments, np.ones(tanh.size), ones, UNBOUNDED, exponent).scale
    hidden = [np.flatnonzero(np.isin(tanh, np.arange(group.offset, group.stop))) for group in program.groups
              if group.activation == "tanh" and group.role == "hidden"]
    gains = group_input_gains(arguments, hidden, exponent)
    machine = algebraic_sigmoid(gains * arguments, exponent)
    wanted = np.tanh(arguments)
    gain_scale = np.clip(np.sum(machine * wanted, 0) / np.maximum(np.sum(machine * machine, 0), 1e-300), 0.5, 1.0)

    noise = np.random.default_rng(seed).standard_normal((samples, 2))
    labels = np.arange(samples) % CLASSES
    interface = compiled.condition_interface
    drive = interface.drive_function(program, interface.check({"label": labels}, samples))
    alpha = np.maximum(compiled.alpha, ALPHA_FLOOR)

    def run(sigma) -> np.ndarray:
        executor = ReplacedSigma(program, alpha, max_iterations=400_000, sigma=sigma, tanh_channels=tanh)
        return executor.run(compiled.schedule, noise, drive).trajectory[-1]

    reference = run(None)
    spread = class_figures(reference, labels)["spread"]
    print(f"W = {guidance:g}: {samples} samples; within-class spread {spread:.4f}; "
          "input gains per hidden group "
          + ", ".join(f"{gain:.3f}" for gain in sorted(set(np.round(gains[np.concatenate(hidden)], 3).tolist()))))
    variants = [
        ("s, uncompensated", lambda u: algebraic_sigmoid(u, exponent)),
        ("k·s, k per channel (the build)", lambda u: scale * algebraic_sigmoid(u, exponent)),
        ("k·s(g·u), g per hidden group", lambda u: gain_scale * algebraic_sigmoid(gains * u, exponent)),
        ("tanh × 1.01", lambda u: 1.01 * np.tanh(u)),
        ("tanh × 0.99", lambda u: 0.99 * np.tanh(u)),
        ("tanh × 0.97", lambda u: 0.97 * np.tanh(u)),
    ]
    for name, sigma in variants:
        final = run(sigma)
        distance = np.linalg.norm(final - reference, axis=1)
        ratios = per_class_ratios(final, reference, labels, seed)
        print(f"  {name:32s} distance mean {distance.mean():.4f} median {np.median(distance):.4f} largest "
              f"{distance.max():.3f}; per-class W2 ratio {ratios.min():.2f}–{ratios.max():.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0, 0.0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    arguments = parser.parse_args()
    exponent = float(load_target("aoc-48").nonidealities.nonlinearity.exponent)
    for guidance in arguments.guidance:
        study(guidance, arguments.samples, arguments.seed, exponent)


if __name__ == "__main__":
    main()
