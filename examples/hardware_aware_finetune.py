"""Fine-tune the shipped two-moons model hardware-aware through the differentiable AOC twin, rebuild, compare.

    python examples/hardware_aware_finetune.py            # ~75 s on 2 CPU cores
    python examples/hardware_aware_finetune.py --quick    # ~10 s smoke run (shorter twin loop, fewer samples)

Steps: load the shipped ADM-form model (``two_moons.pt2``; ``--retrain`` re-trains it with
``train_two_moons.train``, which reproduces the same weights); build it for aoc-48 and read the voltage scales
the backend chose; fine-tune it with conditional flow matching (Eq. 8) where the velocity is Eq. 7 evaluated
by ``HardwareAwareVelocity`` (the aoc-48 non-idealities: measured sigmoid, weight error, read noise, 8-bit SLM
through a straight-through estimator, saturation, input clip); export to ONNX and build again. As a control,
the same number of extra steps of ordinary (digital) training. Each bundle is then run on the bundle twin
(``AocTwin``, hardware mode) and the source model with the bundle's solver (digital reference) from the same
noise, and the samples are scored by Wasserstein-2 against fresh two-moons data. The column to read is
"hardware - digital": how much the machine's non-idealities cost the model; hardware-aware fine-tuning should
shrink it. W2 on a few hundred samples is noisy (the printed sampling floor says how noisy): compare models,
which share noise and data, rather than absolute values.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_two_moons import AdmMlp, train, two_moons  # noqa: E402

from admc.bundle.store import Bundle  # noqa: E402
from admc.compiler.driver import build  # noqa: E402
from admc.runtime.reference import run_reference  # noqa: E402
from admc.targets.aoc.differentiable import HardwareAwareVelocity, voltage_scales_of_bundle  # noqa: E402
from admc.targets.aoc.twin import AocTwin  # noqa: E402
from admc.verify.metrics import wasserstein2  # noqa: E402

TARGET = "aoc-48"
LEARNING_RATE = 1e-3


def shipped_model() -> AdmMlp:
    """The shipped example's weights (examples/two_moons.pt2) in an ``AdmMlp``, in eval mode."""
    model = AdmMlp()
    model.load_state_dict(dict(torch.export.load(HERE / "two_moons.pt2").state_dict))
    return model.eval()


def flow_matching_loss(velocity: torch.nn.Module, data: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Conditional flow matching (Eq. 8): E ‖v(x_t, t) − (x_1 − x_0)‖², x_t = t x_1 + (1 − t) x_0."""
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
    t = torch.rand(data.shape[0], generator=generator, dtype=data.dtype)
    interpolated = t[:, None] * data + (1 - t[:, None]) * noise
    return ((velocity(interpolated, t) - (data - noise)) ** 2).mean()


def fine_tune(model: AdmMlp, velocity: torch.nn.Module, steps: int, seed: int, learning_rate: float) -> AdmMlp:
    """Optimise ``model``'s own parameters for ``steps`` CFM steps with ``velocity`` (the model itself or a
    twin wrapping it). Requires: ``velocity``'s parameters are ``model``'s. Returns the model in eval mode."""
    data_generator = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    velocity.train()
    for _ in range(steps):
        data = torch.as_tensor(two_moons(512, data_generator), dtype=torch.float32)
        loss = flow_matching_loss(velocity, data, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Write ``model`` as ONNX with inputs x [B, 2], t [B] and output velocity [B, 2]."""
    example = (torch.zeros(4, 2), torch.zeros(4))
    torch.onnx.export(model, example, path, input_names=["x", "t"], output_names=["velocity"],
                      dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "velocity": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def build_model(model: torch.nn.Module, folder: Path, name: str) -> Path:
    """Export ``model`` and build it for the AOC target; returns the bundle path."""
    return build(export_onnx(model, folder / f"{name}.onnx"), folder / name, target=TARGET)


def twin_samples(bundle_path: Path, noise: np.ndarray, quick: bool) -> np.ndarray:
    """Final samples of the bundle twin in hardware mode (the target's non-idealities). ``quick`` shortens
    the loop budget (100 iterations instead of 300) and the readout repeats (2 instead of 5)."""
    options = {"loop_iterations": 100, "repeats": 2} if quick else {}
    return AocTwin(Bundle(bundle_path), **options).run(noise).trajectory[-1]


def reference_samples(model_path: Path, bundle_path: Path, noise: np.ndarray) -> np.ndarray:
    """Final samples of the digital source model with the bundle's solver and time grid (float64)."""
    solver = Bundle(bundle_path).manifest["solver"]
    return run_reference(model_path, noise, solver["name"], np.asarray(solver["grid"])).samples


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer steps and samples (~20 s)")
    parser.add_argument("--output", type=Path, default=None, help="folder for the models and bundles "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="re-train the base model (train_two_moons.train, "
                        "3000 steps, --seed) instead of loading the shipped weights from two_moons.pt2")
    parser.add_argument("--finetune-steps", type=int, default=None, help="default 400 (100 with --quick)")
    parser.add_argument("--samples", type=int, default=None, help="twin samples; default 512 (128 with --quick)")
    return parser.parse_args()


def fine_tuned_models(arguments: argparse.Namespace, base: AdmMlp, scales: list[float],
                      steps: int) -> dict[str, AdmMlp]:
    """The hardware-aware fine-tune (through the differentiable twin) and the digital control, both from
    copies of ``base`` with the same data, seeds, steps and learning rate."""
    hardware_aware = copy.deepcopy(base)
    twin = HardwareAwareVelocity.from_module(hardware_aware, target=TARGET, voltage_scales=scales,
                                             seed=arguments.seed)
    fine_tune(hardware_aware, twin, steps, arguments.seed + 1, LEARNING_RATE)
    digital = copy.deepcopy(base)
    fine_tune(digital, digital, steps, arguments.seed + 1, LEARNING_RATE)
    return {"digital fine-tune (control)": digital, "hardware-aware fine-tune": hardware_aware}


def run(arguments: argparse.Namespace, folder: Path) -> None:
    steps = arguments.finetune_steps or (100 if arguments.quick else 400)
    samples = arguments.samples or (128 if arguments.quick else 512)
    started = time.perf_counter()
    base = train(3000, arguments.seed) if arguments.retrain else shipped_model()
    base_bundle = build_model(base, folder, "base")
    scales = voltage_scales_of_bundle(base_bundle)
    print(f"base model: {'re-trained' if arguments.retrain else 'shipped weights'}; aoc-48 voltage scale per block "
          f"{np.round(scales, 3).tolist()}")
    models = {"base (shipped model)": base, **fine_tuned_models(arguments, base, scales, steps)}
    print(f"fine-tuned {steps} steps through HardwareAwareVelocity; control: {steps} ordinary steps")
    noise = np.random.default_rng(arguments.seed + 10).standard_normal((samples, 2))
    data = two_moons(samples, np.random.default_rng(arguments.seed + 20))
    floor = wasserstein2(data, two_moons(samples, np.random.default_rng(arguments.seed + 30)))
    print(f"Wasserstein-2 to {samples} two-moons samples ({samples} samples per model from the same noise; "
          f"sampling floor: two independent data sets score {floor:.4f})")
    print(f"  {'model':<30} {'bundle twin (hardware)':>23} {'source (digital)':>17} {'hardware - digital':>19}")
    for index, (name, model) in enumerate(models.items()):
        bundle = base_bundle if index == 0 else build_model(model, folder, f"model_{index}")
        model_path = bundle.parent / f"{bundle.stem}.onnx"
        hardware = wasserstein2(twin_samples(bundle, noise, arguments.quick), data)
        digital = wasserstein2(reference_samples(model_path, bundle, noise), data)
        print(f"  {name:<30} {hardware:>23.4f} {digital:>17.4f} {hardware - digital:>+19.4f}")
    print(f"models and bundles in {folder}; {time.perf_counter() - started:.0f} s")


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and deterministic
    if arguments.output is not None:
        arguments.output.mkdir(parents=True, exist_ok=True)
        run(arguments, arguments.output)
        return
    with tempfile.TemporaryDirectory() as folder:
        run(arguments, Path(folder))


if __name__ == "__main__":
    main()
