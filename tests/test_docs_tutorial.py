"""The tutorial runs as written (issue 23, item 4): every ```bash and ```python block of docs/tutorial.md, in
order, in a fresh folder (train a small model, export ONNX and .pt2 with a dynamic batch, build, inspect,
simulate, reference, verify, estimate, the Python API), through tests/docs_runner.py."""

from __future__ import annotations

from pathlib import Path

import docs_runner
import pytest

TUTORIAL = docs_runner.ROOT / "docs" / "tutorial.md"


def test_tutorial_has_no_skipped_block() -> None:
    blocks = docs_runner.blocks(TUTORIAL)
    assert {block.language for block in blocks} == {"bash", "python"}
    assert all(block.skip is None for block in blocks)


@pytest.mark.slow
def test_tutorial_runs(tmp_path: Path) -> None:
    docs_runner.run_page(TUTORIAL, tmp_path)
    for name in ("velocity.onnx", "velocity.pt2", "twin.npy", "exact.npy", "ref.npy"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "out" / "velocity" / "manifest.json").is_file()
