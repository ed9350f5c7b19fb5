"""The steps the shapes and steps examples share: build a model for a target, run the bundle on the AOC twin
with the bundle's own loop budget (what ``admc simulate`` does), run the reference executor, and score
samples with admc's metrics (``admc.verify.metrics``: unbiased squared MMD with the median-bandwidth RBF mixture,
exact W2 by POT's network simplex) — one implementation of each, shared with ``admc verify``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.passes.loop_budget import bundle_loop_budget
from admc.runtime.reference import ReferenceResult, run_reference
from admc.targets.aoc.twin import AocTwin
from admc.verify.metrics import mmd, wasserstein2


@dataclass
class TwinSamples:
    samples: np.ndarray          # [B, d]
    loop_iterations: int         # loop iterations per sample over the whole schedule (all phases, one repeat)
    loop_budget: int | None      # the bundle's loop budget per closed phase (None: the twin's default)


def build_bundle(model: str | Path, directory: str | Path, solver: str, steps: int,
                 fp_iterations: int | None = None, target: str = "aoc-48") -> Bundle:
    """Compile ``model`` into ``directory`` (replaced if present: it is this example's own output)."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    return Bundle(build(model, directory, target=target, solver=solver, steps=steps,
                        fp_iterations=fp_iterations))


def twin_samples(bundle: Bundle, noise: np.ndarray, seed: int = 0, float64: bool = False) -> TwinSamples:
    """The twin's samples from ``noise`` with the bundle's non-idealities and loop budget (as ``admc
    simulate``). float32 by default: the read noise (≈3e-3 of full scale) is far above float32 rounding and
    the run is about twice as fast."""
    budget = bundle_loop_budget(bundle.manifest)
    twin = AocTwin(bundle, loop_iterations=budget, seed=seed, dtype=torch.float64 if float64 else torch.float32)
    result = twin.run(noise)
    iterations = int(sum(sum(counts) for counts in result.iterations))
    return TwinSamples(result.trajectory[-1], iterations, budget)


def reference_samples(model: str | Path, noise: np.ndarray, solver: str, steps: int,
                      fp_iterations: int | None = None) -> ReferenceResult:
    """The source model integrated by the reference executor (float64, implicit equations solved tightly
    unless ``fp_iterations`` fixes the count)."""
    return run_reference(str(model), noise, solver, steps, fp_iterations)


def distances(samples: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Squared MMD and exact W2 of ``samples`` against ground-truth samples ``truth``."""
    return {"mmd": float(mmd(samples, truth)), "w2": float(wasserstein2(samples, truth))}
