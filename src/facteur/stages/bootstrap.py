"""The ``bootstrap`` step of every stage run: a clean checkout of the branch the stage works on.

The workspace is cloned when it is missing or empty, and reused when it already is a checkout of the same
remote: fetched, then stripped of whatever an earlier attempt left (changes, untracked and ignored files, a
merge in progress). Anything else in the way is refused, never deleted. The head branch is then checked out
at origin's tip when origin has it; otherwise it starts from the base, with the branches of the
dependencies merged in, in order.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from facteur.stages.git import Git, GitError, MergeConflict, check_branch_name, without_credentials

logger = logging.getLogger(__name__)

#: ``scheme://`` URLs and scp-like ``host:path`` remotes are not local paths
_NOT_A_PATH = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/]*:)")


class StartPoint(StrEnum):
    """Where the head branch of a checkout came from."""

    #: origin already had the head branch
    HEAD = "head"
    #: a new branch from the base
    BASE = "base"
    #: a new branch from the base with dependency branches merged in
    DEPENDENCIES = "dependencies"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkout:
    base: str
    head: str
    #: the commit checked out
    sha: str
    started_from: StartPoint
    #: dependency branches merged into the head, in order
    merged: tuple[str, ...] = ()
    #: dependency branches origin does not have (the caller decides whether that is fatal)
    missing: tuple[str, ...] = ()
    #: the workspace was cloned (rather than reused)
    cloned: bool


async def bootstrap(
    git: Git, *, remote: str, base: str, head: str, dependencies: Sequence[str] = ()
) -> Checkout:
    """Check out ``head`` in ``git.workdir`` from ``remote`` (a path, a ``file://`` or an ``https://`` URL).

    The branch names are checked before git runs. :class:`GitError` when the workspace holds something
    else, the remote is empty or has no ``base``, or a dependency does not merge cleanly
    (:class:`MergeConflict`; the merge is aborted and the work tree left clean)."""
    if isinstance(dependencies, str):
        raise TypeError("dependencies is a sequence of branch names, not one string")
    base, head = check_branch_name(base), check_branch_name(head)
    wanted = tuple(dict.fromkeys(check_branch_name(name) for name in dependencies))
    cloned = await _prepare(git, remote)
    shown = without_credentials(remote)
    if not await git.has_remote_branches():
        raise GitError(
            f"the repository {shown} is empty: it has no commits, so there is no {base!r} to start from"
        )
    if not await git.remote_branch_exists(base):
        raise GitError(f"base branch {base!r} does not exist in {shown}")
    merged: list[str] = []
    missing: list[str] = []
    if await git.remote_branch_exists(head):
        await git.run("checkout", "--force", "--track", "-B", head, f"refs/remotes/origin/{head}")
        started_from = StartPoint.HEAD
    else:
        await git.run("checkout", "--force", "--no-track", "-B", head, f"refs/remotes/origin/{base}")
        for name in wanted:
            if not await git.remote_branch_exists(name):
                missing.append(name)
                continue
            await _merge(git, name, head=head, base=base, merged=merged)
            merged.append(name)
        started_from = StartPoint.DEPENDENCIES if merged else StartPoint.BASE
    checkout = Checkout(
        base=base,
        head=head,
        sha=await git.head_sha(),
        started_from=started_from,
        merged=tuple(merged),
        missing=tuple(missing),
        cloned=cloned,
    )
    logger.info(
        "bootstrap_done: head=%s base=%s started_from=%s sha=%s merged=%s missing=%s cloned=%s",
        head,
        base,
        started_from.value,
        checkout.sha,
        ",".join(merged),
        ",".join(missing),
        cloned,
    )
    return checkout


async def _prepare(git: Git, remote: str) -> bool:
    """Clone into a missing or empty workspace (True), or clean and fetch a checkout of ``remote``."""
    workdir = git.workdir
    shown = without_credentials(remote)
    state = _workspace_state(workdir)
    if state == "file":
        raise GitError(f"cannot check out {shown} into {workdir}: it is a file")
    if state == "free":
        await git.clone(remote, checkout=False)
        return True
    refusal = f"{workdir} is not empty and is not a checkout of {shown}"
    advice = "Facteur does not touch it: empty or remove it, or use another workspace"
    problem = await git.worktree_problem()
    if problem is not None:
        raise GitError(f"{refusal} ({problem}); {advice}")
    origin = await git.origin_url()
    if origin is None or not same_remote(origin, remote):
        found = "it has no origin" if origin is None else f"its origin is {without_credentials(origin)}"
        raise GitError(f"{refusal} ({found}); {advice}")
    await git.fetch()
    await git.discard_local_changes()
    return False


async def _merge(git: Git, name: str, *, head: str, base: str, merged: Sequence[str]) -> None:
    try:
        await git.merge(
            f"refs/remotes/origin/{name}", message=f"Merge dependency branch '{name}' into {head}"
        )
    except MergeConflict as exc:
        onto = f"{base!r}" + "".join(f" + {done!r}" for done in merged)
        raise MergeConflict(
            f"dependency branch {name!r} does not merge cleanly into {head!r} (made of {onto}): "
            f"both change {', '.join(exc.files)}; the merge was aborted",
            exc.files,
        ) from None


def _workspace_state(path: Path) -> Literal["free", "file", "occupied"]:
    """``free`` when missing or an empty directory."""
    if not path.exists():
        return "free"
    if not path.is_dir():
        return "file"
    return "occupied" if any(path.iterdir()) else "free"


def same_remote(a: str, b: str) -> bool:
    """Whether two remotes are the same repository: local paths compare resolved, URLs as written."""
    if not _NOT_A_PATH.match(a) and not _NOT_A_PATH.match(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a.rstrip("/") == b.rstrip("/")
