"""Branch names as git takes them (``git check-ref-format --branch``), checked without running git: names
that come from events, plans and settings are refused before any command sees them."""

from __future__ import annotations

_FORBIDDEN = frozenset(" ~^:?*[\\")


def branch_name_problem(name: str) -> str | None:
    """Why git would not take ``name`` as a branch (``HEAD`` and ``@`` name a commit), or None."""
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return "it starts with '-'"
    if name in ("HEAD", "@"):
        return "it names the current commit, not a branch"
    if any(ord(char) < 0o40 or ord(char) == 0o177 for char in name):
        return "it contains a control character"
    forbidden = sorted(_FORBIDDEN.intersection(name))
    if forbidden:
        return "it contains " + ", ".join(repr(char) for char in forbidden)
    for sequence in ("..", "@{", "//"):
        if sequence in name:
            return f"it contains {sequence!r}"
    if name.startswith("/") or name.endswith("/"):
        return "it starts or ends with '/'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"its part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its part {part!r} ends with '.lock'"
    return None
