"""The markdown structure both readers of author text share: the plan reader (:mod:`facteur.domain.plans`)
and the idea-spec reader (:mod:`facteur.domain.idea_spec`).

Fenced code blocks are tracked as CommonMark does (:class:`Fences`), ATX headings are read with their
level (:func:`atx_heading`), list items share one pattern (:data:`LIST_ITEM`), heading names are compared
in one form (:func:`heading_name`), and author text shown in a problem message is quoted inertly
(:func:`quote`).
"""

from __future__ import annotations

import re

from facteur.domain.untrusted import collapse, truncate

#: a list item's marker (``-``, ``*``, ``+``, ``1.`` or ``1)``) and the blanks after it
LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
#: the emphasis and code marks around a heading's name
DECORATION = "*_` \t"

_ATX = re.compile(r"^ {0,3}(#{1,6})(?=[ \t]|$)(.*)$")
#: an ATX heading's closing sequence: ``#`` characters at the end, after a blank (or alone)
CLOSING = re.compile(r"(?:^|[ \t]+)#+$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


class Fences:
    """Tracks fenced code blocks line by line, as CommonMark does: a block opened by three or more
    backticks or tildes closes at a line of at least as many of the same character and nothing else."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: str | None = None

    @property
    def inside(self) -> bool:
        return self._open is not None

    def code(self, line: str) -> bool:
        """Whether ``line`` is code: a fence line or a line inside a fenced block."""
        match = _FENCE.match(line)
        if self._open is None:
            if match is None or (match.group(1)[0] == "`" and "`" in match.group(2)):
                return False
            self._open = match.group(1)
            return True
        fence = self._open
        if (
            match is not None
            and match.group(1)[0] == fence[0]
            and len(match.group(1)) >= len(fence)
            and not match.group(2).strip(" \t")
        ):
            self._open = None
        return True


def atx_heading(line: str) -> tuple[int, str] | None:
    """An ATX heading's level and text (without its closing ``#`` sequence), or ``None``.

    The caller decides whether the line is code (:class:`Fences`).
    """
    match = _ATX.match(line)
    if match is None:
        return None
    text = CLOSING.sub("", match.group(2).strip(" \t"))
    return len(match.group(1)), text.strip(" \t")


def heading_name(text: str) -> str:
    """A heading's text in the form names are compared in: without emphasis or code marks, a trailing
    colon or extra whitespace, case-folded (``**Success Metrics:**`` gives ``success metrics``)."""
    return collapse(text.strip(DECORATION).rstrip(":").strip(DECORATION)).casefold()


def quote(value: str, limit: int) -> str:
    """Author text shown in a problem message: one line of at most ``limit`` characters in a code span, so
    that no mention, link or markup in it is rendered."""
    return "`" + truncate(collapse(value), limit).replace("`", "'") + "`"
