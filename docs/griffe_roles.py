"""Griffe extension: the docstrings' reStructuredText as Markdown shows it: Sphinx roles (:class:`X`, :func:`f`,
:mod:`m`, ...) as code spans, and a literal block (a paragraph ending ``::``, then an indented block) as a code
block."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")
LITERAL = re.compile(r"::\n\n((?:[ \t]+\S[^\n]*\n?|[ \t]*\n)+)")


def _literal(found: re.Match[str]) -> str:
    block = textwrap.dedent(found.group(1)).strip("\n")
    return f":\n\n```text\n{block}\n```\n\n"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL.sub(_literal, ROLE.sub(r"`\1`", obj.docstring.value))
