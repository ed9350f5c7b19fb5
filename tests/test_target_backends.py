"""Targets declare their needs and name their backends; shared passes read the declarations (issue 11).

- no module of the shared code (every .py file under admc/, passes/ and ir/) imports a target's package,
  compares a target's kind or keys a table or a manifest section by a target's kind: it reads what a target
  description or its backend declares;
- every kind in the loader's one table names a backend module that resolves to a ``TargetBackend`` of that
  name (or none, for the ideal target), which declares its manifest section and its sweep twin where it has
  them; a backend that cannot be imported is an error naming it;
- the passes both targets run: the same spine records (canonicalise, pack, solver phases, static table)
  and the same tiling function, then each target's own lowering.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import admc.passes.tiling as tiling
from admc.bundle.manifest_types import TargetSection
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.passes.manager import PassManager
from admc.targets.backends import TargetBackend, backend_of, resolve_backend
from admc.targets.loader import KINDS, load_target

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLE = REPOSITORY / "examples" / "two_moons.onnx"
SHARED_FILES = sorted(path for folder in ("admc", "passes", "ir") for path in (REPOSITORY / folder).rglob("*.py"))
# Every kind the loader knows (a new target is covered without editing this test).
KINDS_ALTERNATIVES = "|".join(map(re.escape, KINDS))
KIND = rf"""["'](?:{KINDS_ALTERNATIVES})["']"""
TARGET_PACKAGE = rf"admc\.targets\.(?:{KINDS_ALTERNATIVES})\b"
TARGET_BRANCH = re.compile("|".join([
    rf"^\s*(?:from|import)\s+{TARGET_PACKAGE}", rf"^\s*from\s+admc\.targets\s+import\s+.*\b(?:{KINDS_ALTERNATIVES})\b",
    rf"""["']{TARGET_PACKAGE}""",  # a module path handed to importlib
    r"""target\w*(?:\.kind|\[["']kind["']\]|\.get\(["']kind["']\))\s*[!=]=""",  # target.kind == ...
    r"""[!=]=\s*target\w*(?:\.kind|\[["']kind["']\])""",
    r"""\[["']target["']\]\s*(?:\[["']kind["']\]|\.get\(["']kind["']\))\s*[!=]=""",  # manifest["target"]["kind"]
    r"""\.get\(["']target["'][^)]*\)\.get\(["']kind["']\)\s*[!=]=""",
    rf"[!=]=\s*{KIND}", rf"{KIND}\s*[!=]=", rf"\bin\s*[(\[{{][^)\]}}]*{KIND}",  # == "aoc", in ("aoc", ...)
    # a table or a manifest section keyed by a target with code of its own: ["aoc"], .get("aoc"), {"aoc": ...}
    r"""\[["'](?:{0})["']\]|\.get\(["'](?:{0})["']|["'](?:{0})["']\s*:""".format(
        "|".join(re.escape(kind) for kind, description in KINDS.items() if description.backend is not None)),
]))


SHARED_SPINE = ["canonicalise", "condition interface and guidance", "pack", "solver phases and Δt",
                "static injection table"]
AOC_LOWERING = ["state scaling", "tiling and placement", "routing", "α selection", "gain floors",
                "gains and transmissions", "σ fit and fold", "quantisation", "realised program", "emission"]
RRAM_LOWERING = ["calibration run", "time scale", "voltage scales", "tiling and placement", "routing",
                 "conductance mapping", "dac waveforms", "quantisation bound", "emission"]


@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda path: str(path.relative_to(REPOSITORY)))
def test_shared_code_has_no_target_specific_branch(path: Path) -> None:
    offenders = [f"{path.relative_to(REPOSITORY)}:{number}: {line.strip()}"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if TARGET_BRANCH.search(line)]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("line", [
    "from admc.targets.aoc.twin import AocTwin", "import admc.targets.rram.lowering as lowering",
    "from admc.targets import aoc", '    "aoc": ("admc.targets.aoc.twin", "AocTwin"),',
    "if target.kind == 'aoc':", 'if kind != "rram":', 'if manifest["target"]["kind"] == kind:',
    'elif manifest.target.get("kind") == "ideal" and blocks:', "if target_kind in ('aoc', 'rram'):",
    'section = manifest["aoc"]', 'section = manifest.get("rram", {})'])
def test_the_rule_catches_what_it_forbids(line: str) -> None:
    assert TARGET_BRANCH.search(line), line


@pytest.mark.parametrize("line", [
    'if row["kind"] == SENSITIVITY:', 'if condition.kind == "index":', 'trajectories["ideal"][-1]',
    "backend = backend_of(target)", "from admc.targets.loader import KINDS", 'if kind == "uniform":'])
def test_the_rule_lets_generic_code_through(line: str) -> None:
    assert not TARGET_BRANCH.search(line), line


def test_every_kind_names_a_backend_that_resolves() -> None:
    assert set(KINDS) == {"ideal", "aoc", "rram"}
    for kind, description in KINDS.items():
        backend = resolve_backend(description.backend, kind)
        if kind == "ideal":
            assert backend is None
        else:
            assert isinstance(backend, TargetBackend) and backend.name == kind
            assert backend.lowering is not None and backend.read_program is not None and backend.run_twin is not None
            assert issubclass(backend.manifest_section, TargetSection)
            assert (backend.make_twin is not None) == (kind == "aoc")  # the RRAM twin runs no sweep chips yet


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
    # Discrete-time loops get one α pass (the AOC's inside its lowering, where its gain range is known: the
    # spine gives its calibration run only a settling α) and their certificates after; a continuous-time
    # program has no loop to relax. Each backend's lowering is its own named passes.
    assert records["aoc-48"] == [*SHARED_SPINE, "settling α and calibration run", *AOC_LOWERING,
                                 "convergence certificates and loop budget"]
    assert records["aoc-48"].count("α selection") == 1
    assert records["rram-128"] == [*SHARED_SPINE, *RRAM_LOWERING]
    assert calls == [48, 128]


@pytest.mark.parametrize(("function", "broken_pass"), [("quantise_set", "quantisation"),
                                                       ("gains_and_transmissions", "gains and transmissions"),
                                                       ("route", "routing")])
def test_verify_passes_names_the_backend_pass_that_breaks_its_promise(tmp_path: Path, monkeypatch, function: str,
                                                                      broken_pass: str) -> None:
    import admc.targets.aoc.lowering as aoc_lowering

    original = getattr(aoc_lowering, function)

    def broken(*arguments):
        result = original(*arguments)
        if function == "quantise_set":  # the brightest pixel 5 % dimmer than its grey level
            realised = {path: values.copy() for path, values in result.realised.items()}
            brightest = np.unravel_index(np.argmax(realised["positive"]), realised["positive"].shape)
            realised["positive"][brightest] -= 0.05
            return replace(result, realised=realised)
        if function == "gains_and_transmissions":  # a 0.1 % gain error
            beta, transmissions = result
            return beta * 1.001, transmissions
        data = json.loads(result.data)  # a LED no channel drives
        first = next(edge for edge in data["edges"] if edge[1][0] == "input_port")
        data["edges"].remove(first)
        return replace(result, data=json.dumps(data, sort_keys=True, separators=(",", ":")).encode())

    monkeypatch.setattr(aoc_lowering, function, broken)
    with pytest.raises(AdmcError, match=f"pass '{broken_pass}' changed the program's semantics"):
        build(EXAMPLE, tmp_path / "bundle", target="aoc-48", solver="implicit-euler", steps=8,
              passes=PassManager(verify=True))
    assert not (tmp_path / "bundle").exists()


def test_a_target_refuses_a_solver_of_the_other_kind() -> None:
    from admc.compiler.driver import check_solver

    assert check_solver("continuous", load_target("rram")) == "continuous"
    assert check_solver("cn", load_target("aoc-48")) == "crank-nicolson"
    with pytest.raises(AdmcError, match="solver 'continuous' is continuous-time; target 'aoc-48' runs discrete"):
        check_solver("continuous", load_target("aoc-48"))
    with pytest.raises(AdmcError, match="target 'rram-128' runs continuous-time solvers only"):
        check_solver("implicit-euler", load_target("rram"))
    assert load_target("rram").default_solver == "continuous"


def test_quantisation_in_chunks_of_tiles_gives_the_same_bundle(tmp_path: Path, monkeypatch) -> None:
    """``quantise_set`` quantises up to ``QUANTISE_TILES`` tiles per call, several calls on threads; one tile per
    call (as it once did), every call on a thread pool, must give the same bytes in every payload."""
    import admc.targets.aoc.backend as aoc_backend

    chunked = Bundle(build(EXAMPLE, tmp_path / "chunked", target="aoc-48", steps=2))
    assert len(chunked.manifest["aoc"]["tiles"]) > 1
    monkeypatch.setattr(aoc_backend, "QUANTISE_TILES", 1)
    monkeypatch.setattr(aoc_backend.os, "cpu_count", lambda: 2)  # the threaded path, whatever the machine
    single = Bundle(build(EXAMPLE, tmp_path / "single", target="aoc-48", steps=2))
    assert single.manifest["payloads"] == chunked.manifest["payloads"]
