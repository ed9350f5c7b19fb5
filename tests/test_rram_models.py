"""``admc verify`` on rram-128 for the example, the hold-out kinds the optical target accepts, ReLU MLPs and a
network needing several crossbars; and noise-aware training's effect on the twin (issue 11 acceptance).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from models import AdmForm, GlueMlp, ResidualMlp, SinusoidalTime, StandardMlp, example_inputs, export_onnx, seeded

from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build
from admc.runtime.reference import run_reference
from admc.targets.rram.twin import RramTwin
from admc.verify.metrics import wasserstein2

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


class ReluMlp(torch.nn.Module):
    def __init__(self, hidden: tuple[int, ...] = (24, 24), d: int = 2):
        super().__init__()
        sizes = [d + 1, *hidden, d]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](torch.cat([x, t[:, None]], 1))
        for layer in self.layers[1:]:
            h = layer(torch.relu(h))
        return h


KINDS = {
    "adm-form": lambda: AdmForm((16, 12)),
    "tanh-mlp": lambda: StandardMlp((16, 16)),
    "residual": lambda: ResidualMlp(16),
    "sinusoidal-time": lambda: SinusoidalTime(16),
    "glue": lambda: GlueMlp(12),
    "relu-mlp": lambda: ReluMlp((24, 24)),
}


def verify(bundle: Path, samples: int = 128) -> dict:
    report_path = bundle.parent / f"{bundle.name}.json"
    status = main(["verify", str(bundle), "--samples", str(samples), "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0, report["links"]
    return report


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_hold_out_kinds_verify_on_rram(tmp_path: Path, kind: str) -> None:
    model = export_onnx(seeded(KINDS[kind](), 1), tmp_path / f"{kind}.onnx")
    report = verify(build(model, tmp_path / "bundle", target="rram", steps=8))
    assert report["solver"] == "continuous" and len(report["links"]) == 4


@pytest.mark.slow
def test_the_example_verifies_on_rram(tmp_path: Path) -> None:
    bundle = build(EXAMPLES / "rram" / "relu_moons_noise_aware.onnx", tmp_path / "bundle", target="rram")
    report = verify(bundle, samples=256)
    assert report["distributions"]["twin"]["wasserstein2"] < report["distributions"]["gaussian fit (baseline)"][
        "wasserstein2"]


@pytest.mark.slow
def test_a_network_needing_several_crossbars_builds_and_verifies(tmp_path: Path) -> None:
    # tanh keeps the adaptive solves short; ReLU at this width verifies too, with ~10× more solver steps.
    model = export_onnx(seeded(StandardMlp((256, 256, 256), d=16), 0), tmp_path / "wide.onnx", example_inputs(16))
    bundle = build(model, tmp_path / "bundle", target="rram", steps=4)
    summary = Bundle(bundle).manifest["rram"]["summary"]
    assert summary["crossbars_used"] >= summary["lower_bound"] >= 7
    # The time column of the first layer is a time term (DAC-driven), not a crossbar row.
    assert summary["devices_programmed"] == 2 * (16 * 256 + 2 * 256 * 256 + 256 * 16)
    verify(bundle, samples=64)


@pytest.mark.slow
def test_noise_aware_training_lowers_the_twin_w2(tmp_path: Path) -> None:
    """Over 5 chips (seeds), the noise-aware model's twin samples are closer to its reference than the
    plain model's are to its own (benchmarks/rram_noise_aware.py prints the per-chip figures)."""
    noise = np.random.default_rng(0).standard_normal((256, 2))
    means = {}
    for name in ("noise_aware", "plain"):
        model = EXAMPLES / "rram" / f"relu_moons_{name}.onnx"
        bundle = Bundle(build(model, tmp_path / name, target="rram", steps=8))
        reference = run_reference(model, noise, "continuous", bundle.manifest["solver"]["grid"]).samples
        means[name] = float(np.mean([wasserstein2(RramTwin(bundle, seed=seed).run(noise)[-1], reference)
                                     for seed in range(5)]))
    assert means["noise_aware"] < means["plain"], means
