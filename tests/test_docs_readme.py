"""The README's tour runs as written (issue 23, item 4): every ```bash and ```python block of README.md, in
order, in a fresh folder with the shipped examples, through tests/docs_runner.py; a renamed option or a
command that no longer exits as the README says fails here. Blocks marked ``<!-- doctest: skip REASON -->``
are the install line, a fragment, the calibrated machine, the conditional example and the Ray sweep, each
with its reason in the README; their ``admc`` commands are still parsed. The run is made cheaper
(``SPEEDUPS``: 64 samples instead of 256, 8 steps instead of 16) without changing a command's options."""

from __future__ import annotations

from pathlib import Path

import docs_runner
import pytest

README = docs_runner.ROOT / "README.md"
SKIPPED = 5
# About 30 CPU-s instead of several minutes; the README's own sizes are what a reader runs.
SPEEDUPS = docs_runner.Speedups(
    substitutions=(("standard_normal((256, 2))", "standard_normal((64, 2))"),
                   ("bundle.verify(samples=256)", "bundle.verify(samples=64)"),
                   ('output="out/two_moons")', 'output="out/two_moons", steps=8)')),
    appended={"admc build": "--steps 8", "admc verify": "--samples 64"})


def test_readme_blocks_are_found_and_skips_give_reasons() -> None:
    blocks = docs_runner.blocks(README)
    assert sum(block.language == "bash" for block in blocks) >= 4
    assert all(block.skip for block in blocks if block.skip is not None)
    assert len([block for block in blocks if block.skip is not None]) <= SKIPPED


@pytest.mark.slow
def test_readme_tour_runs(tmp_path: Path) -> None:
    skipped = docs_runner.run_page(README, tmp_path, SPEEDUPS)
    assert (tmp_path / "out" / "two_moons" / "manifest.json").is_file()
    assert len(skipped) <= SKIPPED
