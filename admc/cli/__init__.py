"""The ``admc`` command line: a thin layer that parses options, calls the compiler, runtime and verification,
and maps every way a command can end to one exit status."""

from admc.cli.commands import main

__all__ = ["main"]
