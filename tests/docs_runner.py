"""Run a Markdown page's ```bash and ```python blocks as a reader would, in order, in one working directory
(issue 23, item 4: documentation that is tested).

Requires: a page whose fenced blocks are meant to run from the repository's root (``examples/`` is linked
into the working directory). Guarantees: every ```bash and ```python block runs unless the line before it is
``<!-- doctest: skip REASON -->`` (a reason is required; a skipped block's ``admc`` commands are still parsed
by the real argument parser, so a renamed option fails there too); ``admc …`` commands run in this process through
``admc.cli.main`` (the same parser and handlers as the ``admc`` script, without paying the imports again),
``python -c CODE`` lines run in this process too, any other line runs in bash; a command must exit 0 unless
its trailing comment says ``exits N``; Python blocks share one namespace per page, as in a notebook. A block
that fails raises ``AssertionError`` naming the page, the block's line and the command.

A test may make a page cheaper to run without changing what it checks: ``Speedups`` lists text
substitutions (each must still match the page, so a stale one fails) and options appended to a command
(argparse keeps the last value, so ``--samples 64`` after the page's own options wins), e.g. fewer samples.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\s*$")
SKIP = re.compile(r"^<!--\s*doctest:\s*skip\b(.*?)-->\s*$")
EXPECTED_EXIT = re.compile(r"#.*\bexits (\d+)")
RUNNABLE = ("bash", "python")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where the block's first line of code is, 1-based
    skip: str | None  # the stated reason, when the page marks the block to be skipped


@dataclass(frozen=True)
class Speedups:
    """Cheaper settings for a test run: ``substitutions`` (old, new) applied to the page's text, and
    ``appended`` options per command (``{"admc verify": "--samples 64"}``)."""

    substitutions: tuple[tuple[str, str], ...] = ()
    appended: dict[str, str] = field(default_factory=dict)

    def page_text(self, page: Path) -> str:
        text = page.read_text(encoding="utf-8")
        for old, new in self.substitutions:
            assert old in text, f"{page.name}: the speed-up substitution {old!r} no longer matches the page"
            text = text.replace(old, new)
        return text

    def extra_words(self, command: str) -> list[str]:
        """The options to append to ``command`` (none when no prefix matches)."""
        words = shlex.split(command, comments=True)
        for prefix, options in self.appended.items():
            if words[:len(prefix.split())] == prefix.split():
                return shlex.split(options)
        return []


def blocks(page: Path, speedups: Speedups | None = None) -> list[Block]:
    """The page's fenced blocks in the runnable languages, with their skip reasons."""
    lines = (speedups or Speedups()).page_text(page).splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(position for position in range(index + 1, len(lines)) if lines[position].startswith("```"))
        skip = SKIP.match(lines[index - 1]) if index > 0 else None
        if fence.group(1) in RUNNABLE:
            reason = skip.group(1).strip(" :—-") if skip else None
            assert reason != "", f"{page.name}:{index}: a skipped block must say why"
            found.append(Block(fence.group(1), "\n".join(lines[index + 1:end]) + "\n", index + 2, reason))
        index = end + 1
    return found


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined; blank and comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def expected_status(command: str) -> int:
    match = EXPECTED_EXIT.search(command)
    return int(match.group(1)) if match else 0


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def prepare(directory: Path) -> Path:
    """A reader's checkout: ``examples/`` in place, ``out/`` made (the README's install line makes it)."""
    (directory / "examples").symlink_to(ROOT / "examples")
    (directory / "out").mkdir()
    return directory


def parse_command(command: str, where: str) -> None:
    """Check an ``admc`` command of a skipped block against the real parser (options, values, paths)."""
    from admc.cli.commands import make_parser

    words = shlex.split(command, comments=True)
    if words[0] == "admc":
        try:
            make_parser().parse_args(words[1:])
        except Exception as error:
            raise AssertionError(f"{where}: `{command}` does not parse: {error}") from error


def run_command(command: str, where: str, extra_words: list[str] = ()) -> None:
    from admc.cli import main

    words = shlex.split(command, comments=True) + list(extra_words)
    if words[0] == "admc":
        status = main(words[1:])
    elif words[:2] == ["python", "-c"] and len(words) == 3:
        exec(compile(words[2], where, "exec"), {"__name__": "__main__"})
        status = 0
    else:
        environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        line = shlex.join(words) if extra_words else command  # a shell line keeps its pipes and redirections
        status = subprocess.run(line, shell=True, executable="/bin/bash", env=environment).returncode
    expected = expected_status(command)
    assert status == expected, f"{where}: `{shlex.join(words)}` exited {status}, the page says {expected}"


def run_page(page: Path, directory: Path, speedups: Speedups | None = None) -> list[Block]:
    """Run every runnable block of ``page`` in ``directory`` (prepared first); return the blocks skipped."""
    speedups = speedups or Speedups()
    prepare(directory)
    namespace: dict = {"__name__": "__main__"}
    skipped = []
    with working_directory(directory):
        for block in blocks(page, speedups):
            where = f"{page.name}:{block.line}"
            if block.skip is not None:
                skipped.append(block)
                for command in commands(block.code) if block.language == "bash" else ():
                    parse_command(command, where)
            elif block.language == "python":
                exec(compile(block.code, where, "exec"), namespace)
            else:
                for command in commands(block.code):
                    run_command(command, where, speedups.extra_words(command))
    return skipped
