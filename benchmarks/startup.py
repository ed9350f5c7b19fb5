"""Start-up benchmark: the wall time from launching ``admc build`` until its first pass starts (issue 23, item 5).

Requires: admc installed (``pip install -e .``). Run ``python benchmarks/startup.py`` (``--repeats N``,
``--model FILE``, ``--target NAME``). Guarantees: prints the best and median wall time over the repeats, from
``Popen`` of a fresh interpreter to the moment the pass manager starts the build's first pass (the model
already read, the target loaded: everything a user waits for before any compiling), and which heavy
libraries were imported by then. Nothing is written: the child stops at the first pass.

The child runs the real command line (``admc.cli.main``, as the ``admc`` script does) with the pass manager's
``run`` wrapped so that its first call reports and ends the process; the interpreter's own start is counted.
The goal is at most 1.5 s for ``examples/two_moons.onnx`` on the ideal target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "scipy", "cvxpy", "ot", "sklearn", "matplotlib", "pydantic", "networkx",
         "ray", "PIL")
CHILD = """
import os, sys
from admc.passes import manager

def first_pass(self, name, *arguments, **keywords):
    heavy = [module for module in {heavy!r} if module in sys.modules]
    print("FIRST-PASS", name, ",".join(heavy), sep="\t", file=sys.stderr, flush=True)
    os._exit(0)

manager.PassManager.run = first_pass
from admc.cli import main
sys.exit(main(["build", {model!r}, "-o", {output!r}, "--target", {target!r}, "--quiet"]))
"""


def measure(model: str, target: str) -> tuple[float, str, list[str]]:
    """One fresh interpreter: seconds until the first pass starts, its name, the heavy modules loaded."""
    with tempfile.TemporaryDirectory() as directory:
        code = CHILD.format(heavy=HEAVY, model=model, output=str(Path(directory) / "bundle"), target=target)
        started = time.perf_counter()
        # The marker goes to stderr: during a build, file descriptor 1 is diverted there (solver banners).
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT)
        line = ""
        for line in child.stderr:
            if line.startswith("FIRST-PASS"):
                break
        seconds = time.perf_counter() - started
        child.wait()
    if not line.startswith("FIRST-PASS"):
        raise SystemExit(f"the build ended before its first pass (exit {child.returncode})")
    _, name, heavy = line.rstrip("\n").split("\t")
    return seconds, name, [module for module in heavy.split(",") if module]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="examples/two_moons.onnx")
    parser.add_argument("--target", default="ideal")
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    runs = [measure(arguments.model, arguments.target) for _ in range(arguments.repeats)]
    seconds = [run[0] for run in runs]
    print(f"admc build {arguments.model} --target {arguments.target}: first pass ({runs[0][1]!r}) starts after "
          f"{min(seconds):.2f} s (best of {len(seconds)}; median {statistics.median(seconds):.2f} s)")
    print(f"heavy libraries imported by then: {', '.join(runs[0][2]) or 'none'}")


if __name__ == "__main__":
    main()
