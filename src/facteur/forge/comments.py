"""Marker comments: one comment per marker on an issue or pull request, created once, then updated."""

from __future__ import annotations

from facteur.forge.port import Comment, Forge


async def upsert_comment(forge: Forge, repo: str, number: int, marker: str, body: str) -> Comment:
    """Update the newest comment holding ``marker`` (left alone when it already says ``body``), else create
    one; ``body`` must hold the marker."""
    existing = await forge.latest_comment_with(repo, number, marker)
    if existing is None:
        return await forge.create_comment(repo, number, body)
    if existing.body == body:
        return existing
    return await forge.update_comment(repo, existing.id, body)
