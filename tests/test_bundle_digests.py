"""Byte-identical bundles: the shipped examples build to the exact files recorded in ``data/bundle_digests.json``.

Why: refactors of the compiler's structure must not change a single byte of what the machine loads. The
digests were recorded before the "one pipeline" restructuring (main ``f8fd63a``) and pin every file of each
bundle, so a failure names the bundle and the files that moved. A change that is *meant* to move bundles
re-records them (``python tests/test_bundle_digests.py``) and says why in its commit.
Builds go through the CLI entry point in-process with every default (the semidefinite certificate included).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from admc.cli import main
from admc.targets.aoc.calibration import SHIPPED_CALIBRATIONS

pytestmark = [pytest.mark.full_certificates, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DIGESTS = Path(__file__).parent / "data" / "bundle_digests.json"
EIGHT = str(EXAMPLES / "conditional" / "eight_gaussians.onnx")
EIGHT_SIGMA = str(EXAMPLES / "conditional" / "eight_gaussians_aoc_48_sigma.onnx")
MOONS = str(EXAMPLES / "two_moons.onnx")

BUILDS = {
    "two_moons_aoc_48": [MOONS],
    "two_moons_ideal": [MOONS, "--target", "ideal"],
    "two_moons_rram_128": [MOONS, "--target", "rram-128"],
    "two_moons_pt2_ideal": [str(EXAMPLES / "two_moons.pt2"), "--target", "ideal"],
    "two_moons_hw48": [MOONS, "--calibration", str(SHIPPED_CALIBRATIONS["hw48"])],
    "relu_moons_rram_128": [str(EXAMPLES / "rram" / "relu_moons_plain.onnx"), "--target", "rram-128"],
    "eight_gaussians_unguided": [EIGHT, "--solver", "crank-nicolson"],
    "eight_gaussians_guided": [EIGHT, "--solver", "crank-nicolson", "--guidance", "3", "--null-condition",
                               "label=8"],
    "eight_gaussians_sigma_w0": [EIGHT_SIGMA, "--solver", "crank-nicolson", "--guidance", "0",
                                 "--null-condition", "label=8"],
}


def bundle_digest(folder: Path) -> dict[str, str]:
    """The sha256 of every file in a bundle, by its path inside the bundle."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def build_digest(name: str, folder: Path) -> dict[str, str]:
    output = folder / name
    assert main(["build", *BUILDS[name], "-o", str(output)]) == 0
    return bundle_digest(output)


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_bundle_is_byte_identical_to_the_recorded_one(name: str, tmp_path: Path) -> None:
    expected = json.loads(DIGESTS.read_text())[name]
    actual = build_digest(name, tmp_path)
    moved = sorted(path for path in expected.keys() | actual.keys() if expected.get(path) != actual.get(path))
    assert not moved, f"{name}: files that differ from the recorded bundle: {moved}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        names = sys.argv[1:] or sorted(BUILDS)
        recorded = json.loads(DIGESTS.read_text()) if DIGESTS.is_file() else {}
        recorded.update({name: build_digest(name, Path(scratch)) for name in names})
        DIGESTS.write_text(json.dumps(dict(sorted(recorded.items())), indent=1, sort_keys=True) + "\n")
