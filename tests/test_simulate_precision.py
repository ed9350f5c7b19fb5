"""``admc simulate --precision float32``: the AOC twin in float32 (issue 25 item 3), float64 everywhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from admc.api.bundle_handle import load
from admc.cli import main
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.runtime.simulate import SimulateOptions

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "two_moons.onnx"


@pytest.fixture(scope="module")
def aoc_bundle(tmp_path_factory) -> Path:
    return build(EXAMPLE, tmp_path_factory.mktemp("aoc") / "bundle", target="aoc-48", steps=2)


def test_float32_twin_runs_in_float32_and_agrees_with_float64_to_its_precision(aoc_bundle: Path) -> None:
    bundle = load(aoc_bundle)
    noise = np.random.default_rng(3).standard_normal((16, 2))
    double = bundle.run(noise, seed=5).samples
    single = bundle.run(noise, seed=5, precision="float32").samples
    difference = float(np.max(np.abs(single - double)))
    scale = float(np.max(np.abs(double)))
    # Not the same arithmetic (a float32 run cannot equal float64 to the last bit), yet the same samples to
    # float32's few digits through a loop of a few hundred iterations.
    assert 0.0 < difference <= 1e-4 * scale


def test_unknown_precision_ideal_float32_and_rram_float32_are_refused(aoc_bundle: Path, tmp_path: Path,
                                                                    capsys) -> None:
    with pytest.raises(AdmcError, match="precision: expected one of float64, float32"):
        SimulateOptions(precision="float16")
    noise = tmp_path / "noise.npy"
    np.save(noise, np.zeros((2, 2)))
    status = main(["simulate", str(aoc_bundle), "--noise", str(noise), "-o", str(tmp_path / "out.npy"), "--ideal",
                   "--precision", "float32"])
    assert status == 2 and "ideal execution is exact float64" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()
    rram = build(EXAMPLE, tmp_path / "rram", target="rram-128", steps=2)
    with pytest.raises(AdmcError, match="rram twin runs in float64 only"):
        load(rram).run(np.zeros((2, 2)), precision="float32")


def test_a_seed_is_one_chip_in_either_precision() -> None:
    """Static errors are drawn in float64 and cast: a float32 twin of seed s is the float64 twin's chip (a
    float32 draw would be another stream, another chip: 6 % apart in samples on two moons)."""
    import torch

    from admc.targets.aoc.nonidealities import NonIdealities
    from admc.targets.aoc.static_errors import StaticErrors, sample_static_errors

    double = sample_static_errors(NonIdealities(), 3, 8, torch.Generator().manual_seed(4))
    single = sample_static_errors(NonIdealities(), 3, 8, torch.Generator().manual_seed(4), torch.float32)
    for entry in StaticErrors.__dataclass_fields__:
        assert getattr(single, entry).dtype == torch.float32
        assert torch.equal(getattr(single, entry), getattr(double, entry).to(torch.float32))
