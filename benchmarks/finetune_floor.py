"""What limits the final-sample NRMSE of a model fine-tuned for hw48 (issue 24's goal: ≤ 0.01 against the source's
ideal samples): read noise, or the noise-free (systematic) error the fit can still move.

Run: `OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/finetune_floor.py [--kinds two-moons standard-mlp
time-embedding] [--max-steps N] [--samples N] [--seeds K] [--json OUT]` (writes
benchmarks/results/finetune_floor.json; each kind's `samples` fit takes ~4–6 min on two shared cores).

For each model kind (the shipped two moons; the standard MLP and the time-embedding model trained as
`benchmarks/finetune_models.py` trains them) the source and the model fine-tuned with `--objective samples` (the
benchmarks' settings: hw48, at most ``--max-steps`` steps, rebuilt every 25, seed 0) are built for aoc-48 with hw48
and run on the calibrated twin from the same 512 noise samples as the other fine-tuning benchmarks:

- **total**: NRMSE of the twin's final samples with read noise on (``--seeds`` twin seeds) against the source's
  ideal samples (``run_reference``, implicit Euler, 16 steps), as the benchmarks report it (seed 0);
- **systematic**: the same twin with read noise off (every other measured effect on, each phase run to
  convergence): what the program computes, and what fine-tuning fits (its loss is this MSE, through the
  differentiable twin, checked here against the bundle twin);
- **read noise alone**: the noisy samples against the same program's noise-free ones (same bundle, same seeds), and
  how much of it survives averaging over the seeds (a bias the noise leaves through the nonlinear loop, not zero
  mean);
- the fit's own target (``CompiledModel.reference_samples``, verify's reference executor) against the benchmark's
  ideal samples, and each tuned model's own ideal samples against the source's (how far the weights moved).

Errors add in quadrature when independent: total² ≈ systematic² + noise²; the script reports both sides. The
NRMSE of 512 samples is itself an estimate: its bootstrap standard error (1000 resamples, seeded) is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "examples")]

from finetune import (  # noqa: E402
    CALIBRATION,
    NOISE_SEED,
    ROOT,
    SOURCE,
    TARGET,
    TRAIN_SAMPLES,
    TRAIN_SEED,
    ideal_samples,
    write_report,
)
from finetune_models import trained_source  # noqa: E402
from train_two_moons import two_moons  # noqa: E402

from admc.bundle.store import Bundle  # noqa: E402
from admc.compiler.build_options import BuildOptions, target_machine  # noqa: E402
from admc.compiler.driver import build, load_source  # noqa: E402
from admc.finetuning.compiled_model import CompiledModel  # noqa: E402
from admc.finetuning.flow_matching import FitSettings  # noqa: E402
from admc.finetuning.objectives import SAMPLES  # noqa: E402
from admc.finetuning.run import finetune  # noqa: E402
from admc.targets.aoc.calibration import read_calibration  # noqa: E402
from admc.targets.aoc.twin import AocTwin  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402
from admc.verify.metrics import nrmse  # noqa: E402

KINDS = ("two-moons", "standard-mlp", "time-embedding")
BOOTSTRAP = 1000


def twin_samples(bundle: Bundle, noise: np.ndarray, seed: int, read_noise: bool) -> np.ndarray:
    """The calibrated twin's final samples (every measured effect on; read noise as asked)."""
    twin = AocTwin(bundle, calibration=read_calibration(CALIBRATION), seed=seed)
    if not read_noise:
        twin.nonidealities = replace(twin.nonidealities, read_noise=replace(twin.nonidealities.read_noise,
                                                                            enabled=False))
    return twin.run(noise).trajectory[-1]


def bootstrap_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """The standard error of nrmse(estimate, reference) over samples (seeded bootstrap)."""
    generator = np.random.default_rng(0)
    values = [nrmse(estimate[rows], reference[rows]) for rows in
              generator.integers(0, len(reference), (BOOTSTRAP, len(reference)))]
    return float(np.std(values))


def decompose(model: Path, source_ideal: np.ndarray, noise: np.ndarray, seeds: int, directory: Path,
              target: str = TARGET) -> dict:
    """The NRMSE of ``model`` built for hw48 against ``source_ideal``: total (read noise on), systematic (off),
    read noise alone (noisy against noise-free, same bundle), per twin seed."""
    bundle = Bundle(build(model, directory / f"{model.stem}_floor_bundle", target=target, calibration=CALIBRATION))
    clean = twin_samples(bundle, noise, 0, read_noise=False)
    noisy = [twin_samples(bundle, noise, seed, read_noise=True) for seed in range(seeds)]
    total = [nrmse(sample, source_ideal) for sample in noisy]
    alone = [nrmse(sample, clean) for sample in noisy]
    systematic = nrmse(clean, source_ideal)
    return {"total_read_noise_on": total, "systematic_read_noise_off": systematic,
            "read_noise_alone": alone,
            "quadrature_sum": [float(np.hypot(systematic, value)) for value in alone],
            "read_noise_mean_over_seeds_vs_noise_free": nrmse(np.mean(noisy, axis=0), clean),
            "bootstrap_standard_error": {"total_seed_0": bootstrap_error(noisy[0], source_ideal),
                                         "systematic": bootstrap_error(clean, source_ideal)},
            "own_ideal_vs_source_ideal": nrmse(ideal_samples(model, noise), source_ideal),
            "noise_free_samples": clean}


def training_view(model: Path, noise: np.ndarray, source_ideal: np.ndarray, clean: np.ndarray,
                  target_name: str = TARGET) -> dict:
    """What the fit sees for ``model``: its differentiable twin's samples against the bundle twin's noise-free ones,
    and its target (verify's reference executor of the source's build) against the benchmark's ideal samples."""
    target = load_target(target_name)
    options = replace(BuildOptions(), calibration=target_machine(target, CALIBRATION))
    compiled = CompiledModel(load_source(model), target, options, seed=0)
    try:
        differentiable = compiled.samples(noise)
        fit_target = compiled.reference_samples(noise)
    finally:
        compiled.close()
    return {"differentiable_twin_vs_bundle_twin_max_abs": float(np.max(np.abs(differentiable - clean))),
            "fit_target_vs_benchmark_ideal_nrmse": nrmse(fit_target, source_ideal)}


def source_of(kind: str, directory: Path) -> Path:
    return SOURCE if kind == "two-moons" else trained_source(kind, directory)


def tuned(kind: str, source: Path, train: np.ndarray, max_steps: int, settings: FitSettings, directory: Path,
          target: str = TARGET) -> tuple[Path, dict]:
    """``source`` fine-tuned with the samples objective as the benchmarks run it."""
    output = directory / f"{kind}_tuned_samples.onnx"
    began = time.perf_counter()
    result = finetune(source, train, output, target, calibration=CALIBRATION, max_steps=max_steps, seed=0,
                      objective=SAMPLES, control=False, settings=settings,
                      progress=lambda fit, step, steps, loss, best: print(
                          f"  {kind} {step}/{steps} loss {loss:.6f} best {best:.6f}", flush=True)
                      if step % 25 == 0 else None)
    return output, {"steps": result.program.steps, "best_step": result.program.best_step,
                    "holdout_loss": result.program.holdout_loss, "seconds": time.perf_counter() - began}


def floor_of(kind: str, noise: np.ndarray, train: np.ndarray, arguments, settings: FitSettings,
             directory: Path, target: str) -> dict:
    source = source_of(kind, directory)
    source_ideal = ideal_samples(source, noise)
    rows = {"source": decompose(source, source_ideal, noise, arguments.seeds, directory, target)}
    rows["source"]["training_view"] = training_view(source, noise, source_ideal,
                                                    rows["source"]["noise_free_samples"], target)
    fit = None
    if arguments.max_steps > 0:
        path, fit = tuned(kind, source, train, arguments.max_steps, settings, directory, target)
        rows["tuned (samples)"] = decompose(path, source_ideal, noise, arguments.seeds, directory, target)
    for name, row in rows.items():
        row.pop("noise_free_samples")
        print(f"{kind} {name}: total {row['total_read_noise_on'][0]:.4f}, systematic "
              f"{row['systematic_read_noise_off']:.4f}, read noise alone {row['read_noise_alone'][0]:.4f}", flush=True)
    return {"fit": fit, "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--max-steps", type=int, default=300, help="0: the sources only")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=4, help="twin (read noise) seeds")
    parser.add_argument("--bit-depth", type=int, help="the SLM's grey-level bits instead of aoc-48's 8 (an assumption "
                        "of the preset: the calibration fixes none), to see what quantisation contributes")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_floor.json")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    train = two_moons(TRAIN_SAMPLES, np.random.default_rng(TRAIN_SEED))
    noise = np.random.default_rng(NOISE_SEED).standard_normal((arguments.samples, 2))
    settings = FitSettings(objective=SAMPLES, max_steps=arguments.max_steps)  # as finetune() runs it
    report = {"target": TARGET, "bit_depth": arguments.bit_depth or 8, "calibration": CALIBRATION,
              "evaluation_samples": arguments.samples,
              "twin_seeds": arguments.seeds, "fit": {"objective": SAMPLES, "max_steps": arguments.max_steps,
                                                     "settings": vars(settings)}, "models": {}}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        target = TARGET
        if arguments.bit_depth:  # the preset with only the SLM's bit depth changed
            target = str(Path(temporary) / f"aoc-48-{arguments.bit_depth}bit.yaml")
            Path(target).write_text(f"inherits: aoc-48\nname: aoc-48-{arguments.bit_depth}bit\n"
                                    f"slm:\n  bit_depth: {arguments.bit_depth}\n")
        for kind in arguments.kinds:
            report["models"][kind] = floor_of(kind, noise, train, arguments, settings, Path(temporary), target)
    report["seconds"] = time.perf_counter() - began
    write_report(arguments.json, report)


if __name__ == "__main__":
    main()
