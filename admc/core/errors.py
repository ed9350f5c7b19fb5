"""The one exception type admc raises for bad input, and the one formatter every user-facing message goes through.

Guarantees: :func:`one_line` turns any message into a single printable line — control characters (newlines,
tabs, escape sequences, other non-printables) are escaped as ``\\n``, ``\\x1b``…, any single word longer than
:data:`LONGEST_WORD` characters (a 20,000-character node name) is shortened with an ellipsis in its middle,
and the whole line is capped at :data:`LONGEST_MESSAGE` characters — so a hostile name cannot make a
multi-line or screen-filling message. :func:`error_text` quotes a caught library error's message on one line.
"""

from __future__ import annotations

import re

LONGEST_WORD = 300
LONGEST_MESSAGE = 2000
EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE (sysexits.h): a bug in admc, not in the input

_WORD = re.compile(rf"\S{{{LONGEST_WORD + 1},}}")


class AdmcError(Exception):
    """A user-facing error. The message names what is wrong and where (file, node, op, field)."""


class ConvergenceError(AdmcError):
    """A fixed-point solve did not settle: the message names the step, the phase and the residual."""


def _escape(character: str) -> str:
    if character == "\n":
        return "\\n"
    if character == "\r":
        return "\\r"
    if character == "\t":
        return "\\t"
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """Every non-printable character (C0/C1 controls, line and paragraph separators, …) escaped."""
    return "".join(character if character.isprintable() else _escape(character) for character in text)


def shorten(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and end around an ellipsis."""
    if len(text) <= limit:
        return text
    keep = max(limit - 1, 2)
    head = keep - keep // 3
    return f"{text[:head]}…{text[len(text) - (keep - head):]}"


def error_text(error: BaseException) -> str:
    """A caught library error's message with its whitespace collapsed onto one line (its type's name when the
    message is empty), to quote in an AdmcError."""
    return " ".join(str(error).split()) or type(error).__name__


def one_line(message: object) -> str:
    """The single display line of a message (see the module docstring)."""
    text = escape_controls(str(message))
    text = _WORD.sub(lambda match: shorten(match.group(0), LONGEST_WORD), text)
    return shorten(text, LONGEST_MESSAGE)
