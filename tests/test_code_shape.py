"""The shape the project keeps (issue 21): small files, short functions, nothing outside the repository.

- no source file of admc/, ir/, passes/, targets/ over 400 lines;
- no function over 60 lines, except declarative tables (the argument parser) named in ``DECLARATIVE``;
- no file of the repository refers to a folder beside it (the design notes and calibrations ship inside).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCES = sorted(path for folder in ("admc", "ir", "passes", "targets")
                 for path in (REPOSITORY / folder).rglob("*.py"))
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# Declarative tables: a function that only lists options reads best as one list.
DECLARATIVE = {("admc/cli/commands.py", "make_parser"), ("admc/cli/parser.py", "make_parser")}


def relative(path: Path) -> str:
    return path.relative_to(REPOSITORY).as_posix()


def test_the_source_tree_is_found() -> None:
    assert len(SOURCES) > 100
    assert any(relative(path) == "admc/compiler/driver.py" for path in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_files_and_functions_are_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") <= MAX_FILE_LINES, f"{relative(path)}: {text.count(chr(10))} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            and (relative(path), node.name) not in DECLARATIVE]
    assert not long, f"{relative(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_nothing_refers_to_a_folder_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = ("../shared", "shared/DESIGN.md", "shared/reference", "shared/seeds", "seeds/00")
    found = []
    for name in listed.stdout.split():
        path = REPOSITORY / name
        if path.suffix not in {".py", ".md", ".yaml", ".toml", ".txt", ".sh", ""} or not path.is_file():
            continue
        if name == "tests/test_code_shape.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {word}" for word in outside if word in text]
    assert not found, found
