"""The guided eight-Gaussians example on aoc-48 as the README builds it: with the σ shape compensated, the twin's
W = 3 samples sit in their own class's region and near its centre (without the compensation the median
distance to the own centre was 0.264, against 0.08 for the ideal program)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from admc.compiler.driver import build
from admc.runtime.simulate import simulate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conditional"
CLASSES, RADIUS = 8, 1.5  # train_eight_gaussians.py


@pytest.mark.slow
def test_guided_twin_samples_land_near_their_own_centre(tmp_path: Path) -> None:
    bundle = build(EXAMPLE / "eight_gaussians.onnx", tmp_path / "eight", solver="crank-nicolson", guidance=3.0,
                   null_conditions={"label": CLASSES})
    angles = 2 * np.pi * np.arange(CLASSES) / CLASSES
    centres = RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    noise = np.random.default_rng(11).standard_normal((32, 2))
    labels = np.arange(32) % CLASSES
    samples = simulate(bundle, noise, {"label": labels}, ideal=False)
    distances = np.linalg.norm(samples[:, None, :] - centres[None], axis=2)
    assert np.mean(np.argmin(distances, axis=1) == labels) >= 0.95
    # 0.073 with the compensation (256 samples), 0.264 without it; the ideal program's is 0.08.
    assert np.median(distances[np.arange(labels.size), labels]) < 0.15


@pytest.mark.slow
def test_the_example_trained_with_the_machines_sigma_verifies_per_class(tmp_path: Path) -> None:
    """eight_gaussians_aoc_48_sigma.onnx (train_eight_gaussians.py --sigma aoc-48 …) computes aoc-48's own σ, so
    no σ shape is left to compensate, and it was trained through weight noise: unguided, every class's twin link
    passes (0.10–0.33 of the 0.5 limit at 256 samples), where the tanh model's reach 2.0."""
    from admc.bundle.store import Bundle
    from admc.verify.chain import verify_bundle

    bundle = Bundle(build(EXAMPLE / "eight_gaussians_aoc_48_sigma.onnx", tmp_path / "machine", solver="crank-nicolson",
                          guidance=0.0, null_conditions={"label": CLASSES}))
    assert "sigma_compensation" not in bundle.manifest["aoc"]
    report = verify_bundle(bundle, samples=256, seed=0)
    assert len(report.per_class) == CLASSES and report.passed, [
        (row["class"], row.get("twin_w2_ratio")) for row in report.per_class]


@pytest.mark.slow
def test_the_machine_sigma_example_guided_on_the_twin_stays_in_class_and_sharpens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same model built with W = 3: the twin's samples land in their own class's region, and against W = 0
    (run-time guidance, same images) each class concentrates, as the exact guided flow of the data does (spread
    0.059 against 0.134). Measured at 64 samples: accuracy 1.000 at both; spread 0.139 against 0.157."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from class_figures import class_figures
    from exact_flow import sample as exact_sample

    bundle = build(EXAMPLE / "eight_gaussians_aoc_48_sigma.onnx", tmp_path / "guided", solver="crank-nicolson",
                   guidance=3.0, null_conditions={"label": CLASSES})
    noise = np.random.default_rng(11).standard_normal((64, 2))
    labels = np.arange(64) % CLASSES
    guided = class_figures(simulate(bundle, noise, {"label": labels}, guidance=3.0, ideal=False), labels)
    unguided = class_figures(simulate(bundle, noise, {"label": labels}, guidance=0.0, ideal=False), labels)
    assert guided["accuracy"] >= 0.95
    assert guided["spread"] < unguided["spread"]
    exact = [class_figures(exact_sample(noise, labels, weight), labels)["spread"] for weight in (3.0, 0.0)]
    assert exact[0] < exact[1]
