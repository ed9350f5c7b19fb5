"""What a build of an ONNX model imports: neither torch nor cvxpy.

torch (about 2 s to import on a cold cache) is needed to read a .pt2 model, to run the calibrated machine's
curves and to fine-tune; cvxpy only in tests and benchmarks (the α step goes to Clarabel directly). A build of
an ONNX model for an uncalibrated AOC, the ideal target or RRAM needs neither, and an import that crept back
into a module every build loads would cost every `admc build` its start-up time again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from admc.cli import main
for target, output in zip(sys.argv[2::2], sys.argv[3::2]):
    status = main(["build", sys.argv[1], "-o", output, "--target", target, "--quiet"])
    assert status in (0, None), status
print(json.dumps({name: name in sys.modules for name in ("torch", "cvxpy")}))
"""


def test_an_onnx_build_imports_neither_torch_nor_cvxpy(tmp_path: Path) -> None:
    arguments = [str(ROOT / "examples" / "two_moons.onnx")]
    for target in ("aoc-48", "ideal", "rram-128"):
        arguments += [target, str(tmp_path / target)]
    finished = subprocess.run([sys.executable, "-c", CHILD, *arguments], capture_output=True, text=True,
                              check=True, timeout=300)
    imported = json.loads(finished.stdout.strip().splitlines()[-1])
    assert imported == {"torch": False, "cvxpy": False}, imported
    for target in ("aoc-48", "ideal", "rram-128"):
        assert (tmp_path / target / "manifest.json").is_file()
