"""The wheel ships one top-level package, ``admc``, with its subpackages and the target presets.

The source tree is copied to a temporary directory first so the build leaves no ``build/`` or
``*.egg-info`` in the working tree. Marked ``slow`` (deselect with ``-m "not slow"``), but in the default run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
# .venv: the project's own virtual environment (CI makes it in the tree, ~2 GB with torch) is not source.
IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
                                 ".ruff_cache", ".hypothesis", "tests", ".venv")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    workspace = tmp_path_factory.mktemp("packaging")
    source = workspace / "source"
    shutil.copytree(REPOSITORY, source, ignore=IGNORED)
    output = workspace / "wheels"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", str(output)],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (wheel,) = output.glob("admc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.mark.slow
def test_the_only_top_level_package_is_admc(wheel_names):
    top_level = {name.split("/", 1)[0] for name in wheel_names}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top_level - dist_info == {"admc"}


@pytest.mark.slow
@pytest.mark.parametrize("package", ["admc/ir/", "admc/passes/", "admc/targets/", "admc/targets/ideal/",
                                     "admc/targets/aoc/", "admc/frontends/"])
def test_subpackages_are_inside_admc(wheel_names, package):
    assert f"{package}__init__.py" in wheel_names


@pytest.mark.slow
def test_every_module_of_the_source_tree_is_shipped(wheel_names):
    roots = {"admc": "admc", "ir": "admc/ir", "passes": "admc/passes", "targets": "admc/targets"}
    expected = {
        f"{prefix}/{path.relative_to(REPOSITORY / folder).as_posix()}"
        for folder, prefix in roots.items()
        for path in (REPOSITORY / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected <= set(wheel_names), sorted(expected - set(wheel_names))


@pytest.mark.slow
def test_preset_yaml_files_are_shipped(wheel_names):
    presets = sorted((REPOSITORY / "targets").rglob("*.yaml"))
    assert presets, "the source tree has no preset YAML files"
    for preset in presets:
        assert f"admc/targets/{preset.relative_to(REPOSITORY / 'targets').as_posix()}" in wheel_names
    assert "admc/targets/aoc/presets/aoc-48.yaml" in wheel_names


@pytest.mark.slow
def test_the_cli_entry_point_is_declared(wheel_names, tmp_path_factory):
    assert any(name.endswith(".dist-info/entry_points.txt") for name in wheel_names)
