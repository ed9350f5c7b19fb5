"""Short pieces of the frontends' refusal messages, so each stays one readable line (issue 22: refusals that
quoted a library's whole report ran to 1,000+ characters).

Requires: a caught library exception (onnx, torch.export), or a list of names. Guarantees: ``quote`` gives the
error's first sentence on one line, at most ``QUOTE_LIMIT`` characters, plus the user-code location the report
names (``File "...", line N, in f``) when it names one; ``listed`` gives at most ``LISTED`` names and how many
more there are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from admc.core.errors import error_text

QUOTE_LIMIT = 200
LISTED = 5
# A sentence shorter than this is a heading ("Error."), not the gist: then the text is cut at the limit only.
SHORTEST_SENTENCE = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_LOCATION = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def quote(error: BaseException) -> str:
    """The gist of a library's error message (module docstring)."""
    text = error_text(error)
    gist = text
    for end in _SENTENCE_END.finditer(text):
        if end.start() >= SHORTEST_SENTENCE:
            gist = text[:end.start()]
            break
    if len(gist) > QUOTE_LIMIT:
        gist = gist[:QUOTE_LIMIT - 1].rstrip() + "…"
    location = _LOCATION.search(text)
    if location is not None and location.group(0) not in gist:
        file, line, function = location.groups()
        gist += f" (at {PurePath(file).name}:{line} in {function})"
    return gist


def listed(names: Sequence[str]) -> str:
    """``a, b, c`` — or the first ``LISTED`` and ``and N more``; ``(none)`` for no names."""
    if not names:
        return "(none)"
    shown = ", ".join(names[:LISTED])
    return shown if len(names) <= LISTED else f"{shown} and {len(names) - LISTED} more"
