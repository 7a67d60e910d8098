"""The one comment an idea-spec issue gets while its spec is invalid (``<!-- facteur:idea-spec -->``):
posted once, updated after edits, and turned into a note that planning started once an edit fixes it."""

from __future__ import annotations

import logging

from facteur.domain.untrusted import IDEA_SPEC_MARKER
from facteur.errors import ForgeError
from facteur.forge.comments import upsert_comment
from facteur.forge.port import Forge
from facteur.intake.github_triggers import IssueRef

logger = logging.getLogger(__name__)

SPEC_VALID_NOTE = "The idea spec is valid now; planning has started."


class SpecComments:
    def __init__(self, forge: Forge | None) -> None:
        self._forge = forge

    async def report_problems(self, issue: IssueRef, body: str) -> None:
        """One comment per issue explaining what the spec lacks: created once, updated after edits."""
        if self._forge is None:
            logger.info(
                "no forge configured: idea spec problems not posted for %s#%s", issue.repository, issue.number
            )
            return
        try:
            await upsert_comment(self._forge, issue.repository, issue.number, IDEA_SPEC_MARKER, body)
        except ForgeError as exc:
            logger.warning(
                "idea spec comment failed: issue=%s#%s error=%s", issue.repository, issue.number, exc
            )

    async def held_back(self, issue: IssueRef) -> int | None:
        """After an edit made a spec valid: the id of the problems comment when planning had been held back
        by the spec (None otherwise)."""
        if self._forge is None:
            return None
        try:
            existing = await self._forge.latest_comment_with(issue.repository, issue.number, IDEA_SPEC_MARKER)
        except ForgeError as exc:
            logger.warning(
                "idea spec comment failed: issue=%s#%s error=%s", issue.repository, issue.number, exc
            )
            return None
        if existing is None or SPEC_VALID_NOTE in existing.body:
            return None
        return existing.id

    async def mark_fixed(self, issue: IssueRef, comment_id: int) -> None:
        """Once planning is recorded: the problems comment says the spec is valid now."""
        if self._forge is None:
            return
        try:
            await self._forge.update_comment(
                issue.repository, comment_id, f"{IDEA_SPEC_MARKER}\n{SPEC_VALID_NOTE}"
            )
        except ForgeError as exc:
            logger.warning(
                "idea spec comment failed: issue=%s#%s error=%s", issue.repository, issue.number, exc
            )
