"""Griffe extension for the API reference: docstrings' Sphinx cross-reference roles become Markdown code.

The package's docstrings name other objects the way Sphinx does (``:func:`predict```, ``:class:`~a.b.Report```),
which Markdown would show as written. This turns each role into inline code of the name it shows: the last part
where Sphinx's ``~`` asks for it, the title where the role gives one (``:func:`title <target>```).
"""
import re
from typing import Any

import griffe

SPHINX_ROLE = re.compile(r':(?:py:)?(?:attr|class|data|exc|func|meth|mod|obj):`(?P<target>[^`]+)`')


def _shown_name(match: re.Match) -> str:
    target = match['target']
    titled = re.fullmatch(r'(?P<title>.+?)\s*<[^>]+>', target)
    if titled:
        return f'`{titled["title"]}`'
    if target.startswith('~'):
        return f'`{target[1:].rsplit(".", 1)[-1]}`'
    return f'`{target}`'


def markdown_roles(text: str) -> str:
    """``text`` with every Sphinx cross-reference role written as inline code."""
    return SPHINX_ROLE.sub(_shown_name, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe reads for the API reference."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring as soon as griffe has read it."""
        if obj.docstring is not None:
            obj.docstring.value = markdown_roles(obj.docstring.value)
