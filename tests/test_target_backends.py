"""Targets declare their needs and name their backends; shared passes read the declarations (issue 11).

- no shared pass (passes/), nor the driver, verify, bundle reader or executors, branches on a target's kind
  or imports a target's package;
- every kind in the loader's one table names a backend module that resolves to a ``TargetBackend`` of that
  name (or none, for the ideal target); a backend that cannot be imported is an error naming it;
- the passes both targets run: the same spine records (canonicalise, pack, solver phases, static table)
  and the same tiling function, then each target's own lowering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import admc.passes.tiling as tiling
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.passes.manager import PassManager
from admc.targets.backends import TargetBackend, backend_of, resolve_backend
from admc.targets.loader import KINDS, load_target

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLE = REPOSITORY / "examples" / "two_moons.onnx"
SHARED_FILES = [*sorted((REPOSITORY / "passes").glob("*.py")),
                *(REPOSITORY / "admc" / name for name in ("compiler/driver.py", "verify/chain.py", "bundle/program.py",
                                                          "runtime/execute.py", "runtime/executor.py",
                                                          "runtime/continuous.py", "bundle/summary.py",
                                                          "runtime/reference.py"))]
# target.kind == ..., manifest["target"]["kind"] == ..., .get("kind") == ..., == "aoc", or a target's package.
TARGET_BRANCH = re.compile(r"""(target\w*\.kind|["']kind["']\]|["']kind["']\))\s*[!=]="""
                           r"""|[!=]=\s*["'](aoc|rram|ideal)["']|targets\.(aoc|rram)\b""")
SHARED_SPINE = ["canonicalise", "pack", "solver phases and Δt", "static injection table"]


@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda path: path.name)
def test_shared_code_has_no_target_specific_branch(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert not TARGET_BRANCH.search(line), f"{path.name}:{number}: {line.strip()}"


def test_every_kind_names_a_backend_that_resolves() -> None:
    assert set(KINDS) == {"ideal", "aoc", "rram"}
    for kind, entry in KINDS.items():
        backend = resolve_backend(entry.description.backend, kind)
        if kind == "ideal":
            assert backend is None
        else:
            assert isinstance(backend, TargetBackend) and backend.name == kind
            assert backend.lower is not None and backend.read_program is not None and backend.run_twin is not None


def test_a_backend_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(AdmcError, match="backend module 'admc.targets.nowhere' cannot be imported"):
        resolve_backend("admc.targets.nowhere", "target 'x'")
    with pytest.raises(AdmcError, match="defines no BACKEND"):
        resolve_backend("admc.targets.rram.description", "target 'x'")

    @dataclass(frozen=True)
    class Broken:
        name: str = "broken"
        backend: ClassVar[str] = "admc.targets.missing_backend"

    with pytest.raises(AdmcError, match="target 'broken'.*missing_backend"):
        backend_of(Broken())


def test_both_targets_share_the_spine_and_the_tiling_pass(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    original = tiling.place_blocks

    def counting(blocks, ports, *arguments, **options):
        calls.append(ports)
        return original(blocks, ports, *arguments, **options)

    import admc.targets.aoc.backend as aoc_backend
    import admc.targets.rram.lowering as rram_lowering

    # Both backends call the one tiling pass (not a copy): the module size is the only difference.
    assert aoc_backend.place_blocks is original and rram_lowering.place_blocks is original
    monkeypatch.setattr(aoc_backend, "place_blocks", counting)
    monkeypatch.setattr(rram_lowering, "place_blocks", counting)
    records = {}
    for target, solver in (("aoc-48", "implicit-euler"), ("rram-128", "continuous")):
        passes = PassManager()
        build(EXAMPLE, tmp_path / target, target=target, solver=solver, steps=8, passes=passes)
        records[target] = [record.name for record in passes.records]
    # Discrete-time loops get the α pass before lowering and their certificates after; a continuous-time
    # program has no loop to relax.
    assert records["aoc-48"] == [*SHARED_SPINE, "α selection", "lower to AOC",
                                 "convergence certificates and loop budget"]
    assert records["rram-128"] == [*SHARED_SPINE, "lower to RRAM"]
    assert calls == [48, 128]


def test_a_target_refuses_a_solver_of_the_other_kind() -> None:
    from admc.compiler.driver import check_solver

    assert check_solver("continuous", load_target("rram")) == "continuous"
    assert check_solver("cn", load_target("aoc-48")) == "crank-nicolson"
    with pytest.raises(AdmcError, match="solver 'continuous' is continuous-time; target 'aoc-48' runs discrete"):
        check_solver("continuous", load_target("aoc-48"))
    with pytest.raises(AdmcError, match="target 'rram-128' runs continuous-time solvers only"):
        check_solver("implicit-euler", load_target("rram"))
    assert load_target("rram").default_solver == "continuous"
