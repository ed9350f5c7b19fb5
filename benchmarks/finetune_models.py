"""Fine-tuning for a measured machine (issue 24) beyond the ADM form: a standard MLP and a time-embedding model.

Run: `nice .venv/bin/python benchmarks/finetune_models.py [--max-steps N] [--samples N] [--objective O]
[--no-control] [--json OUT]` (writes benchmarks/results/finetune_models.json; a few minutes on two shared cores at
the defaults; ``--objective samples`` writes finetune_models_samples.json beside it unless ``--json`` is given).

Two model kinds the compiler canonicalises differently from the shipped ADM-form two moons, each trained here
on two-moons data (seeded, CPU, a few seconds; no download) and exported to ONNX:

- ``standard-mlp``: ``Linear(cat[x, t]) → tanh → Linear → tanh → Linear`` (2+1 → 32 → 32 → 2); the first
  layer reads x without tanh, which canonicalisation folds into the input (fold-input).
- ``time-embedding``: a sinusoidal embedding of t (4 frequencies) through a small MLP (8 → 16 → 32) added to the
  first hidden layer of ``x → 32 → 32 → 2`` (a time-embedding subnetwork).

Each is fine-tuned by `admc.finetune` for aoc-48 with the shipped hw48 calibration with the ``teacher``
objective (or ``--objective``; rebuilt and selected on the rebuilt program every 25 steps), beside the digital
control (unless ``--no-control``; the same
weights trained by flow matching for the same number of steps). Source, tuned model and control are each built
for aoc-48 with `--calibration hw48` and run on the calibrated twin (read noise on) from the same noise, and
measured as in `benchmarks/finetune.py`: W2 of the twin's samples to fresh two-moons data, W2 of each model's own
ideal samples to the data, and final-sample NRMSE of the twin's samples against the *source* model's ideal
samples (here: the model trained in this script).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "examples")]

from finetune import (  # noqa: E402
    CALIBRATION,
    DATA_SEED,
    NOISE_SEED,
    ROOT,
    TARGET,
    TRAIN_SAMPLES,
    TRAIN_SEED,
    evaluate,
    goals,
    write_report,
)
from train_two_moons import export_velocity_onnx, fit_flow_matching, two_moons  # noqa: E402

from admc.finetuning.flow_matching import FitSettings  # noqa: E402
from admc.finetuning.model_writer import write_tuned  # noqa: E402
from admc.finetuning.objectives import LEARNING_RATES, OBJECTIVES, TEACHER  # noqa: E402
from admc.finetuning.run import finetune  # noqa: E402

SOURCE_STEPS, SOURCE_BATCH, SOURCE_SEED = 3000, 512, 3  # as examples/train_two_moons.py trains two moons


class StandardMlp(nn.Module):
    """``Linear(cat[x, t]) → tanh → Linear → tanh → Linear``: the first layer reads x without tanh."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.first, self.second, self.last = nn.Linear(3, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.first(torch.cat([x, t[:, None]], dim=1))
        return self.last(torch.tanh(self.second(torch.tanh(h))))


class TimeEmbeddingMlp(nn.Module):
    """Sinusoidal time embedding → small MLP → added to the first hidden layer of the state's MLP."""

    def __init__(self, hidden: int = 32, embedding: int = 16, half: int = 4) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.exp(-math.log(100.0) * torch.arange(half) / half))
        self.embed_in, self.embed_out = nn.Linear(2 * half, embedding), nn.Linear(embedding, hidden)
        self.first, self.second, self.last = nn.Linear(2, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.frequencies
        time_term = self.embed_out(torch.tanh(self.embed_in(torch.cat([torch.sin(angles), torch.cos(angles)], 1))))
        h = torch.tanh(self.first(x) + time_term)
        return self.last(torch.tanh(self.second(h)))


MODELS = {"standard-mlp": StandardMlp, "time-embedding": TimeEmbeddingMlp}


def trained_source(kind: str, directory: Path) -> Path:
    """``kind`` trained by conditional flow matching on two moons (seeded, float32, one thread) and exported."""
    torch.manual_seed(SOURCE_SEED)
    generator = np.random.default_rng(SOURCE_SEED)
    model = MODELS[kind]()
    fit_flow_matching(model, lambda: torch.as_tensor(two_moons(SOURCE_BATCH, generator), dtype=torch.float32),
                      SOURCE_STEPS)
    return export_velocity_onnx(model, directory / f"{kind.replace('-', '_')}.onnx")


def tune(kind: str, source: Path, train: np.ndarray, max_steps: int, directory: Path, objective: str,
         control: bool) -> tuple[dict, dict]:
    """The fine-tuning for hw48 with ``objective`` (rebuilt at each evaluation) and, with ``control``, its digital
    control, all written."""
    began = time.perf_counter()
    output = directory / f"{source.stem}_tuned.onnx"
    result = finetune(source, train, output, TARGET, calibration=CALIBRATION, max_steps=max_steps, seed=0,
                      objective=objective, control=control, progress=lambda fit, step, steps, loss, best: print(
                          f"  {kind} {fit} {step}/{steps} loss {loss:.5f} best {best:.5f}", flush=True)
                      if step % 25 == 0 else None)
    models = {f"tuned ({objective}, rebuilt)": output}
    figures = {"steps": result.program.steps, "best_step": result.program.best_step,
               "rebuilds": result.program.rebuilds, "stopped": result.program.stopped,
               "holdout_loss": result.program.holdout_loss, "seconds": time.perf_counter() - began}
    if control:
        written = write_tuned(source, result.control.weights, directory / f"{source.stem}_control.onnx")
        models["control (digital flow matching, same steps)"] = written
        figures["control"] = {"steps": result.control.steps, "best_step": result.control.best_step,
                              "holdout_loss": result.control.holdout_loss}
    return models, figures


def run_kind(kind: str, train: np.ndarray, data: np.ndarray, noise: np.ndarray, max_steps: int,
             directory: Path, objective: str = TEACHER, control: bool = True) -> dict:
    began = time.perf_counter()
    source = trained_source(kind, directory)
    training_seconds = time.perf_counter() - began
    print(f"{kind}: trained in {training_seconds:.1f} s", flush=True)
    written, fit = tune(kind, source, train, max_steps, directory, objective, control)
    rows = evaluate({"source": source, **written}, noise, data, directory)
    return {"source_training": {"steps": SOURCE_STEPS, "batch": SOURCE_BATCH, "seed": SOURCE_SEED,
                                "seconds": training_seconds},
            "fit": fit, "results": rows, "goals": goals(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--kinds", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--objective", default=TEACHER, choices=OBJECTIVES)
    parser.add_argument("--no-control", action="store_true", help="leave out the digital control")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    suffix = "" if arguments.objective == TEACHER else f"_{arguments.objective}"
    arguments.json = arguments.json or ROOT / "benchmarks" / "results" / f"finetune_models{suffix}.json"
    torch.set_num_threads(1)  # the cores are shared; one thread also keeps the source's training reproducible
    train = two_moons(TRAIN_SAMPLES, np.random.default_rng(TRAIN_SEED))
    data = two_moons(arguments.samples, np.random.default_rng(DATA_SEED))
    noise = np.random.default_rng(NOISE_SEED).standard_normal((arguments.samples, 2))
    report = {"target": TARGET, "calibration": CALIBRATION,
              "settings": {"max_steps": arguments.max_steps, "batch": FitSettings().batch,
                           "objective": arguments.objective, "learning_rate": LEARNING_RATES[arguments.objective],
                           "train_samples": TRAIN_SAMPLES,
                           "evaluation_samples": arguments.samples,
                           "w2": "exact (POT EMD via admc.verify.metrics.wasserstein2), equal-size sets"},
              "models": {}}
    with tempfile.TemporaryDirectory() as temporary:
        for kind in arguments.kinds:
            report["models"][kind] = run_kind(kind, train, data, noise, arguments.max_steps, Path(temporary),
                                              arguments.objective, not arguments.no_control)
    write_report(arguments.json, report)


if __name__ == "__main__":
    main()
