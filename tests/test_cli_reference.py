"""The documentation's references stay complete (issue 23, item 3): the committed command-line reference is
what docs/gen_cli_reference.py generates from the parser now, it names every option of every command, and
the Python API reference renders every public name of ``admc``."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import admc
from admc.cli.commands import make_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {"admc": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"admc {name}": sub for name, sub in action.choices.items()})
    return found


def test_committed_cli_reference_is_the_generated_one() -> None:
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert page == _generator().render(), "docs/reference/cli.md is stale: run python docs/gen_cli_reference.py"


def test_cli_reference_names_every_option_of_every_command() -> None:
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `(admc[^`]*)`\n(.*?)(?=^## |\Z)", page, flags=re.MULTILINE | re.DOTALL))
    commands = _commands(make_parser())
    assert set(sections) == set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            spellings = action.option_strings or [action.metavar or action.dest]
            for spelling in spellings:
                assert f"`{spelling}" in sections[name], f"{name}: {spelling} is missing from the CLI reference"


def test_api_reference_covers_every_public_name() -> None:
    page = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: admc\.(\w+)$", page, flags=re.MULTILINE))
    public = set(admc.__all__) - {"__version__"}
    assert rendered == public
    assert "`admc.__version__`" in page
