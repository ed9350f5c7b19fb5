"""What a rebuild does to a `samples` fit (issue 24): the held-out loss through the structure the fit trained through
against the rebuilt program's, and fit settings that might keep the rebuilt loss falling.

Run: `OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/finetune_rebuild.py [--variants NAME ...] [--kinds ...]
[--max-steps N]` (merges its variants into benchmarks/results/finetune_rebuild.json, so variants may run as separate
processes; each two-moons variant takes 5–12 min on two shared cores).

Each variant fine-tunes with ``--objective samples`` for hw48 (seed 0, the benchmarks' data) under its
``FitSettings`` (below), recording before each rebuild the held-out loss through the structure trained through
(``record_trained_through``) beside the rebuilt one; the written model is then measured as in
`benchmarks/finetune_floor.py`: final-sample NRMSE against the source's ideal samples on the calibrated twin from the
same 512 noise samples, read noise on (twin seed 0) and off.

Also (``--lottery``): the rebuild's own spread at fixed weights, by rebuilding the baseline's tuned weights perturbed
by a relative ``1e-3`` (seeded, six trials) and measuring the noise-free sample MSE on 256 noise samples through the
tuned structure and rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "examples")]

from finetune import CALIBRATION, NOISE_SEED, ROOT, TARGET, TRAIN_SAMPLES, TRAIN_SEED, ideal_samples  # noqa: E402
from finetune_floor import KINDS, source_of, twin_samples  # noqa: E402
from train_two_moons import two_moons  # noqa: E402

from admc.bundle.store import Bundle  # noqa: E402
from admc.compiler.build_options import BuildOptions, target_machine  # noqa: E402
from admc.compiler.driver import build, load_source  # noqa: E402
from admc.finetuning.compiled_model import CompiledModel  # noqa: E402
from admc.finetuning.flow_matching import COSINE, FitSettings  # noqa: E402
from admc.finetuning.model_writer import load_tuned  # noqa: E402
from admc.finetuning.objectives import SAMPLES  # noqa: E402
from admc.finetuning.run import finetune  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402
from admc.verify.metrics import nrmse  # noqa: E402

BASE = FitSettings(objective=SAMPLES, record_trained_through=True)
VARIANTS = {
    "baseline": BASE,
    # A pixel past full scale on the measured machine gets no gradient (FitSettings.hold_full_scale).
    "hold-full-scale": replace(BASE, hold_full_scale=True),
    "cosine": replace(BASE, schedule=COSINE, patience=12),
    "rebuild-every-5": replace(BASE, evaluate_every=5, patience=20),
    "rebuild-every-10": replace(BASE, evaluate_every=10, patience=10),
    "rebuild-every-50": replace(BASE, evaluate_every=50, patience=3),
    "rebuild-every-100": replace(BASE, evaluate_every=100, patience=2),
    "cosine, rebuild-every-5": replace(BASE, schedule=COSINE, evaluate_every=5, patience=60),
    # Through the source's structure throughout (``rebuild=False``): what the fit reaches where no rebuild moves
    # the structure; the written model is rebuilt only when measured.
    "no-rebuild": replace(BASE, patience=12),
    "rollback": replace(BASE, rollback=True, patience=6),
    "patience-8": replace(BASE, patience=8),  # with --max-steps 600: the longer run
}
NO_REBUILD = {"no-rebuild"}
JSON = ROOT / "benchmarks" / "results" / "finetune_rebuild.json"


def measured(model: Path, source_ideal: np.ndarray, noise: np.ndarray, directory: Path) -> dict:
    bundle = Bundle(build(model, directory / f"{model.stem}_bundle", target=TARGET, calibration=CALIBRATION))
    return {"nrmse_read_noise_on": nrmse(twin_samples(bundle, noise, 0, read_noise=True), source_ideal),
            "nrmse_read_noise_off": nrmse(twin_samples(bundle, noise, 0, read_noise=False), source_ideal)}


def variant(kind: str, name: str, source: Path, train: np.ndarray, noise: np.ndarray, max_steps: int,
            directory: Path) -> tuple[dict, Path]:
    output = directory / f"{kind}_{name.replace(', ', '_')}.onnx"
    began = time.perf_counter()
    result = finetune(source, train, output, TARGET, calibration=CALIBRATION, max_steps=max_steps, seed=0,
                      objective=SAMPLES, control=False, settings=VARIANTS[name], rebuild=name not in NO_REBUILD,
                      progress=lambda fit, step, steps, loss, best: print(
                          f"  {kind} {name} {step}/{steps} loss {loss:.6f} best {best:.6f}", flush=True)
                      if step % 25 == 0 else None)
    fit = result.program
    row = {"settings": dict(vars(VARIANTS[name])), "max_steps": max_steps, "rebuild": name not in NO_REBUILD,
           "steps": fit.steps,
           "rollbacks": fit.rollbacks,
           "best_step": fit.best_step, "rebuilds": fit.rebuilds, "seconds": time.perf_counter() - began,
           "holdout_loss": fit.holdout_loss, "trained_through_holdout_loss": fit.trained_through_loss}
    row.update(measured(output, ideal_samples(source, noise), noise, directory))
    print(f"{kind} {name}: best {min(loss for _, loss in fit.holdout_loss):.6f} at {fit.best_step}, NRMSE noise on "
          f"{row['nrmse_read_noise_on']:.4f}, off {row['nrmse_read_noise_off']:.4f}", flush=True)
    return row, output


def lottery(source: Path, tuned: Path, directory: Path, trials: int = 6, relative: float = 1e-3) -> dict:
    """The sample MSE of ``tuned``'s weights perturbed by ``relative`` (seeded), through the tuned structure and
    rebuilt for the perturbed weights: how much a rebuild alone moves the loss at (almost) fixed weights."""
    target = load_target(TARGET)
    options = replace(BuildOptions(), calibration=target_machine(target, CALIBRATION))
    noise = np.random.default_rng(NOISE_SEED).standard_normal((256, 2))
    model = CompiledModel(load_source(tuned), target, options, seed=0)
    try:
        reference = ideal_samples(source, noise)
        error = lambda: float(np.mean((model.samples(noise) - reference) ** 2))  # noqa: E731
        tuned_weights = {name: value.detach().numpy().copy() for name, value in model.parameters.items()}
        rows, generator = [], np.random.default_rng(0)
        unperturbed = error()
        for _ in range(trials):
            weights = {name: (value * (1 + relative * generator.standard_normal(value.shape))).astype(value.dtype)
                       for name, value in tuned_weights.items()}
            with torch.no_grad():
                for name, value in model.parameters.items():
                    value.copy_(torch.as_tensor(weights[name]))
            through = error()
            model.rebuild(load_tuned(tuned, weights, directory, ()))
            rows.append({"through_tuned_structure": through, "rebuilt": error()})
            model.rebuild(load_tuned(tuned, tuned_weights, directory, ()))
    finally:
        model.close()
    return {"relative_perturbation": relative, "samples": len(noise), "unperturbed": unperturbed, "trials": rows}


def merge(update: dict) -> None:
    """Merge ``update`` (kind → variant → row) into the results file (variants may run as separate processes)."""
    report = json.loads(JSON.read_text()) if JSON.is_file() else {"target": TARGET, "calibration": CALIBRATION,
                                                                  "objective": SAMPLES, "models": {}}
    for kind, rows in update.items():
        report["models"].setdefault(kind, {}).update(rows)
    report["load_average_at_end"] = list(os.getloadavg())
    JSON.parent.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["two-moons"], choices=KINDS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--lottery", action="store_true", help="the rebuild's spread at the first variant's weights")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    train = two_moons(TRAIN_SAMPLES, np.random.default_rng(TRAIN_SEED))
    noise = np.random.default_rng(NOISE_SEED).standard_normal((arguments.samples, 2))
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        for kind in arguments.kinds:
            source = source_of(kind, directory)
            for index, name in enumerate(arguments.variants):
                row, output = variant(kind, name, source, train, noise, arguments.max_steps, directory)
                if arguments.lottery and index == 0:
                    row["lottery"] = lottery(source, output, directory)
                row["load_average"] = list(os.getloadavg())
                default = parser.get_default("max_steps")
                merge({kind: {name if arguments.max_steps == default else f"{name}, {arguments.max_steps} steps": row}})
    print(f"wrote {JSON}")


if __name__ == "__main__":
    main()
