"""``admc verify`` sharded over a local 2-CPU Ray instance reports what the unsharded verify reports: every link,
distance and per-step figure to 1e-12, the arrays behind them too (twin read noise off: drawn per batch, it is
the one thing a slice cannot reproduce)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("ray") is None:
    pytest.skip("ray is not installed (the 'sweep' extra)", allow_module_level=True)

from admc.bundle.store import Bundle  # noqa: E402
from admc.compiler.driver import build  # noqa: E402
from admc.sweep.verify_shards import verify_on_ray  # noqa: E402
from admc.verify.chain import verify_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = """inherits: aoc-48
name: aoc-48-quiet
nonidealities:
  read_noise: {enabled: false}
"""


def assert_same(sharded: object, whole: object, where: str = "report") -> None:
    """Equal structure; numbers within 1e-12 (absolute or relative); NaN where NaN."""
    if isinstance(whole, dict):
        assert sorted(sharded) == sorted(whole), where
        for key in whole:
            assert_same(sharded[key], whole[key], f"{where}.{key}")
    elif isinstance(whole, list | tuple):
        assert len(sharded) == len(whole), where
        for index, (left, right) in enumerate(zip(sharded, whole, strict=True)):
            assert_same(left, right, f"{where}[{index}]")
    elif isinstance(whole, float) and not isinstance(whole, bool):
        assert (math.isnan(sharded) and math.isnan(whole)) or sharded == pytest.approx(whole, rel=1e-12, abs=1e-12), \
            f"{where}: {sharded!r} != {whole!r}"
    else:
        assert sharded == whole, where


def test_sharded_verify_reports_what_verify_reports(tmp_path: Path) -> None:
    target = tmp_path / "quiet.yaml"
    target.write_text(TARGET)
    path = build(ROOT / "examples" / "two_moons.onnx", tmp_path / "bundle", target=target, steps=4)
    whole = verify_bundle(Bundle(path), 16, 3, twin_options={"loop_iterations": 60})
    sharded = verify_on_ray(path, 16, 3, loop_iterations=60, workers=2, shards=3)  # 5 + 5 + 6 samples
    assert whole.twin is not None and any("twin" in link.name for link in whole.links)
    assert_same(sharded.to_json(), whole.to_json())
    for name, trajectory in whole.trajectories.items():
        np.testing.assert_allclose(sharded.trajectories[name], trajectory, rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(sharded.noise, whole.noise)
