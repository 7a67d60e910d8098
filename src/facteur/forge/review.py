"""A pull request's review context read from the forge: its threads, check runs and statuses, at once."""

from __future__ import annotations

import asyncio

from facteur.domain.review_context import ReviewContext, build_review_context
from facteur.forge.port import Forge, PullRequest


async def fetch_review_context(forge: Forge, repo: str, pull: PullRequest) -> ReviewContext:
    """The pull request's unresolved threads, failing checks and statuses, read at once, as review context."""
    threads, runs, statuses = await asyncio.gather(
        forge.review_threads(repo, pull.number),
        forge.check_runs(repo, pull.head_sha),
        forge.commit_statuses(repo, pull.head_sha),
    )
    return build_review_context(pull, threads, runs, statuses)
