"""A griffe extension for the API reference: the source's docstrings name objects with Sphinx
roles (:class:`headstart.config.TrainingConfig`), which Markdown would print as they are. Each
becomes inline code, ``~`` keeping only the last part of the name, as Sphinx shows it."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match) -> str:
    short, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if short else name}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
