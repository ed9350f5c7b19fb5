"""The shipped two-moons model (examples/two_moons.onnx, tanh) on aoc-48 (implicit Euler, T = 8) and on rram-128
(continuous), side by side: modules or crossbars, devices, physical time per sample, twin W2.

    nice .venv/bin/python benchmarks/rram_vs_aoc.py [--samples 512]

Devices: programmed SLM pixels on both optical paths (AOC) or RRAM devices of both sides of each pair, against
what the used modules or crossbars hold. Physical time per sample: AOC, the twin's loop iterations over all
steps × one iteration's time constant × the readout repeats; RRAM, the seconds one unit of model time takes
× the unit. W2 of the twin's samples against the source model's reference with the bundle's own solver,
and against the continuous ("exact") flow, with a Gaussian fit's W2 for scale.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.runtime.reference import run_reference
from admc.targets.aoc.twin import AocTwin
from admc.targets.rram.twin import RramTwin
from admc.verify.metrics import gaussian_baseline, wasserstein2

MODEL = Path(__file__).resolve().parent.parent / "examples" / "two_moons.onnx"


def aoc_row(directory: Path, noise: np.ndarray) -> dict:
    bundle = Bundle(build(MODEL, directory / "aoc", target="aoc-48", solver="implicit-euler", steps=8))
    section = bundle.manifest["aoc"]
    ports = bundle.manifest["target"]["module"]["ports"]
    twin = AocTwin(bundle)
    result = twin.run(noise)
    iterations = sum(sum(phases) for phases in result.iterations)
    return {"target": "aoc-48 (implicit Euler, T = 8)", "units": f"{section['summary']['modules_used']} module(s)",
            "devices": 2 * sum((tile["row_stop"] - tile["row_start"]) * (tile["column_stop"] - tile["column_start"])
                               for tile in section["tiles"]),
            "devices_available": 2 * section["summary"]["modules_used"] * ports * ports,
            "seconds": iterations * twin.time_constant * twin.repeats, "samples": result.trajectory[-1],
            "reference": run_reference(MODEL, noise, "implicit-euler", 8).samples}


def rram_row(directory: Path, noise: np.ndarray) -> dict:
    bundle = Bundle(build(MODEL, directory / "rram", target="rram-128", steps=8))
    summary = bundle.manifest["rram"]["summary"]
    return {"target": "rram-128 (continuous)", "units": f"{summary['crossbars_used']} crossbar(s)",
            "devices": summary["devices_programmed"], "devices_available": summary["devices_on_used_crossbars"],
            "seconds": summary["physical_time_per_sample_s"], "samples": RramTwin(bundle).run(noise)[-1],
            "reference": run_reference(MODEL, noise, "continuous", 8).samples,
            "margin": summary["settling_margin"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    arguments = parser.parse_args()
    noise = np.random.default_rng(0).standard_normal((arguments.samples, 2))
    exact = run_reference(MODEL, noise, "continuous", 8).samples
    gaussian = wasserstein2(gaussian_baseline(exact, arguments.samples, 1), exact)
    with tempfile.TemporaryDirectory() as directory:
        rows = [aoc_row(Path(directory), noise), rram_row(Path(directory), noise)]
    print(f"Gaussian fit W2 to the continuous flow: {gaussian:.4f}")
    for row in rows:
        print(f"{row['target']:<32} {row['units']:<14} devices {row['devices']:>6} of {row['devices_available']:>6}  "
              f"{row['seconds'] * 1e6:8.2f} µs/sample  twin W2 vs own reference "
              f"{wasserstein2(row['samples'], row['reference']):.4f}, vs continuous flow "
              f"{wasserstein2(row['samples'], exact):.4f}" + (f"  (margin {row['margin']:.0f}×)" if "margin" in row
                                                               else ""))


if __name__ == "__main__":
    main()
