"""Pull request activity (reference §2.7): a clean draft is taken out of draft and handed to review; a
clean, approved (``+1``) pull request gets one ready-to-merge comment. Never a review run: only an explicit
``@<handle> review`` starts one. Failures are logged, never raised: the delivery is still recorded."""

from __future__ import annotations

import asyncio
import logging

from facteur.domain.untrusted import READY_MARKER
from facteur.errors import ForgeError
from facteur.forge.port import Forge, Reaction
from facteur.forge.review import fetch_review_context
from facteur.intake.github_triggers import PullActivity

logger = logging.getLogger(__name__)

#: actions after which a pull request is (re)considered for review, not for merging
FORCE_REVIEW_ACTIONS = frozenset({"opened", "ready_for_review", "reopened"})


def ready_comment(workflow_identifier: str | None) -> str:
    body = f"{READY_MARKER}\n:shipit:"
    if workflow_identifier:
        body += f"\n\n_Workflow: {workflow_identifier}_"
    return body


class PullActivityHandler:
    def __init__(self, *, forge: Forge | None, handoff_comment: str, workflow_identifier: str | None) -> None:
        self._forge = forge
        self._handoff = handoff_comment
        self._workflow = workflow_identifier

    async def handle(self, activity: PullActivity) -> list[str]:
        """Evaluate the pull request; the actions taken (``marked_ready``, ``handoff_comment``,
        ``ready_comment``) or why none was."""
        if self._forge is None:
            return ["none: no forge configured"]
        try:
            return await self._evaluate(self._forge, activity)
        except ForgeError as exc:
            logger.warning(
                "pull request activity failed: pull=%s#%s action=%s error=%s",
                activity.repository,
                activity.pull_number,
                activity.action,
                exc,
            )
            return [f"failed: {exc}"]

    async def _evaluate(self, forge: Forge, activity: PullActivity) -> list[str]:
        repo, number = activity.repository, activity.pull_number
        pull = await forge.get_pull(repo, number)
        if pull.state != "open" or pull.merged:
            return ["none: pull request closed"]
        if not (pull.head_ref and pull.head_sha and pull.base_ref):
            return ["none: pull request lacks its head or base"]
        context, approved = await asyncio.gather(
            fetch_review_context(forge, repo, pull), forge.has_reaction(repo, number, Reaction.PLUS_ONE)
        )
        done: list[str] = []
        if pull.draft and activity.action != "converted_to_draft" and not context.outstanding_work:
            await forge.mark_ready(repo, pull)
            done.append("marked_ready")
            await forge.create_comment(repo, number, self._handoff)
            done.append("handoff_comment")
        settled = not context.merge_state_requires_attention
        forced = not activity.from_review and activity.action in FORCE_REVIEW_ACTIONS
        if approved and settled and not forced and not context.outstanding_work and not pull.draft:
            existing = await forge.latest_comment_with(repo, number, READY_MARKER)
            if existing is None:
                await forge.create_comment(repo, number, ready_comment(self._workflow))
                done.append("ready_comment")
        return done or ["none: nothing to do"]
