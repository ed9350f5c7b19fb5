"""A griffe extension for the API reference: Sphinx roles in admc's docstrings (``:class:`Bundle```,
``:func:`admc.load```, ``:meth:`Bundle.simulate```) become inline code, as Markdown shows them.

Requires: griffe (installed with mkdocstrings[python]); named in mkdocs.yml under the python handler's
``extensions``. Guarantees: only the rendered docstrings change; the source is untouched.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
