"""Latent digits end to end (the paper's Fig. 3 in miniature): compile the latent ADM, run it, decode, score.

    python examples/latent_digits/reproduce.py -o out/latent [--samples 1000] [--steps 16] [--target aoc-48]

Builds the shipped latent ADM (``latent_adm.onnx``) for the target, samples latent codes from seeded noise
on the digital twin, with the program's exact (ideal) execution and with the source model (reference
executor, float64, same solver and grid), decodes every set with the shipped VAE decoder and reports the
Fréchet distance to the 1,797 real digits in the features of the shipped classifier; the baselines are
VAE-prior sampling (z ~ N(0, I) decoded: the paper's "VAE-alone") and the decoded codes of the real digits
(the VAE's own floor). Writes ``table.md``, ``results.json``, ``samples.png`` and the bundle under OUT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digit_models as digits  # noqa: E402  (the example's numpy helpers, beside this script)

SEED = 0
ROWS = ("twin", "ideal program", "reference (source model)", "VAE prior", "VAE reconstruction (floor)")


def build_bundle(output: Path, target: str, steps: int, solver: str | None) -> Path:
    from admc.compiler.driver import build

    return Path(build(str(HERE / "latent_adm.onnx"), str(output / "bundle"), target=target, steps=steps,
                      solver=solver, force=False))


def sample_codes(bundle_path: Path, noise: np.ndarray, progress: bool = True) -> dict[str, np.ndarray]:
    """Latent codes from the twin (hardware targets), the ideal program and the source model."""
    from tqdm import tqdm

    from admc.bundle.program import bundle_program
    from admc.bundle.store import Bundle
    from admc.runtime.executor import run_ideal
    from admc.runtime.reference import integrate
    from admc.runtime.source_model import make_velocity

    bundle = Bundle(bundle_path)
    manifest = bundle.manifest
    codes = {}
    if manifest["target"].get("kind") == "aoc":
        from admc.passes.loop_budget import bundle_loop_budget
        from admc.targets.aoc.twin import AocTwin

        # The program's loop budget per closed phase, as `admc simulate` runs it.
        twin = AocTwin(bundle, seed=SEED, loop_iterations=bundle_loop_budget(manifest))
        with tqdm(total=manifest["solver"]["steps"], desc="twin", disable=not progress, leave=False) as bar:
            result = twin.run(noise, lambda step, steps: bar.update(1))
        codes["twin"] = result.trajectory[-1]
    program, schedule, alpha = bundle_program(bundle)
    codes["ideal program"] = run_ideal(program, schedule, alpha, noise).trajectory[-1]
    grid = np.asarray(manifest["solver"]["grid"], dtype=np.float64)
    velocity = make_velocity(str(HERE / "latent_adm.onnx"))
    codes["reference (source model)"] = integrate(velocity, noise, manifest["solver"]["name"], grid,
                                                  manifest["solver"].get("fp_iterations")).samples
    return codes


def code_statistics() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The data set's codes and their per-dimension mean and std (the flow's standardisation)."""
    with np.load(HERE / "codes.npz", allow_pickle=False) as shipped:
        return (shipped["codes"].astype(np.float64), shipped["code_mean"].astype(np.float64),
                shipped["code_std"].astype(np.float64))


def to_latent(standardised: np.ndarray) -> np.ndarray:
    """VAE codes of the flow's samples: code_mean + code_std · z (a digital per-dimension affine map)."""
    _, mean, std = code_statistics()
    return mean + std * standardised


def evaluate(codes: dict[str, np.ndarray], samples: int, seed: int = SEED) -> dict[str, dict]:
    """Fréchet distance and class histogram of each decoded set against the real digits."""
    images, _ = digits.real_images()
    real_features = digits.features(images)
    data_codes = code_statistics()[0]
    prior = np.random.default_rng(seed + 1).standard_normal((samples, data_codes.shape[1]))
    sets = {**{name: to_latent(value) for name, value in codes.items()}, "VAE prior": prior,
            "VAE reconstruction (floor)": data_codes}
    results = {}
    for name, latent in sets.items():
        decoded = digits.decode(latent)
        results[name] = {"frechet_distance": digits.frechet_distance(digits.features(decoded), real_features),
                         "samples": int(len(latent)),
                         "classes": np.bincount(digits.predict(decoded), minlength=10).tolist()}
    return results


def write_figure(path: Path, codes: dict[str, np.ndarray], count: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prior = np.random.default_rng(SEED + 1).standard_normal((count, next(iter(codes.values())).shape[1]))
    rows = [(name, to_latent(codes[name][:count])) for name in ("twin", "ideal program") if name in codes]
    rows.append(("VAE prior", prior))
    images, _ = digits.real_images()
    rows.append(("real digits", None))
    figure, axes = plt.subplots(len(rows), count, figsize=(count * 0.8, len(rows) * 0.95))
    for row, (name, latent) in enumerate(rows):
        pictures = images[:count] if latent is None else digits.decode(latent)
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(pictures[column].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    figure.suptitle("latent ADM on the aoc-48 twin vs VAE-prior sampling (same noise seeds across rows 1-2)",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def table(results: dict[str, dict]) -> str:
    lines = ["| samples from | Fréchet distance | predicted classes 0-9 |", "|---|---|---|"]
    for name in ROWS:
        if name in results:
            row = results[name]
            lines.append(f"| {name} ({row['samples']}) | {row['frechet_distance']:.3f} | "
                         f"{' '.join(str(c) for c in row['classes'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=1000, help="generated samples per set (the paper: 1,000)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--solver", default=None, help="default: the target's (implicit Euler on aoc-48)")
    parser.add_argument("--target", default="aoc-48")
    arguments = parser.parse_args()
    output = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    if (output / "bundle").exists():
        import shutil

        shutil.rmtree(output / "bundle")
    bundle = build_bundle(output, arguments.target, arguments.steps, arguments.solver)
    noise = np.random.default_rng(SEED).standard_normal((arguments.samples, 6))
    codes = sample_codes(bundle, noise)
    results = evaluate(codes, arguments.samples)
    (output / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (output / "table.md").write_text(table(results))
    write_figure(output / "samples.png", codes)
    print(table(results), end="")
    twin = results.get("twin", results["ideal program"])["frechet_distance"]
    prior = results["VAE prior"]["frechet_distance"]
    print(f"{'twin' if 'twin' in results else 'ideal program'} {twin:.3f} vs VAE prior {prior:.3f}: "
          + ("better" if twin < prior else "NOT better") + f"; wrote {output}/ (table.md, results.json, samples.png)")
    return 0 if twin < prior else 1


if __name__ == "__main__":
    sys.exit(main())
