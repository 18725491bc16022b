"""A griffe extension for the API reference (configured in ``mkdocs.yml``; not a page).

trainkit's docstrings head their doctests ``Example:``, as the Google style guide does. griffe's
Google parser knows only ``Examples:`` as a section and reads ``Example:`` as an admonition of
Markdown text, where ``>>> x[0]`` lines turn into broken links. This extension renames the heading
before parsing, so the doctests render as Python code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class ExampleSections(griffe.Extension):
    """Read a docstring's ``Example:`` heading as ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
