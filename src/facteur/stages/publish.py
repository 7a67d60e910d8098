"""What a stage publishes on the forge: the progress comment of a task, kept current, and the draft pull
request of a branch, found or opened with bounded retries. (Marker comments: facteur.forge.comments.)"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from facteur.domain.untrusted import one_line
from facteur.errors import FacteurError, ForgeError, ForgeUnavailable
from facteur.forge.comments import upsert_comment
from facteur.forge.port import Forge, PullRequest

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class PublishError(FacteurError):
    """The stage could not publish its work on the forge."""


async def ensure_draft_pull(
    forge: Forge,
    repo: str,
    *,
    head: str,
    base: str,
    title: str,
    body: str,
    attempts: int,
    backoff_seconds: float,
    sleep: Sleep = asyncio.sleep,
) -> PullRequest:
    """The open pull request of ``head``, else a new draft one; retried ``attempts`` times (a forge that
    has only just seen the pushed branch may refuse at first), then :class:`PublishError` saying why."""
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            open_pulls = await forge.pulls_for_head(repo, head)
            if open_pulls:
                return open_pulls[0]
            return await forge.create_draft_pull(repo, head=head, base=base, title=title, body=body)
        except (ForgeError, ForgeUnavailable) as exc:
            problem = exc.message
            logger.warning(
                "draft pull request not opened: repo=%s head=%s attempt=%s/%s problem=%s",
                repo,
                head,
                attempt,
                attempts,
                problem,
            )
        if attempt < attempts:
            await sleep(backoff_seconds * 2 ** (attempt - 1))
    raise PublishError(
        f"no pull request for {head} into {base} in {repo} after {attempts} attempt(s): {problem}"
    )


@dataclass
class Progress:
    """The ``<!-- codex:progress -->`` comment of one task: its checklist in the plan (the acceptance
    criteria), a status line, the agent's own to-do list and a log of milestones, rendered whole each time."""

    title: str
    marker: str
    items: list[tuple[str, bool]]
    milestones: list[str] = field(default_factory=list)
    status: str = "starting"
    todo: list[tuple[str, bool]] = field(default_factory=list)

    def render(self) -> str:
        lines = [self.marker, f"### Progress: {self.title}", "", f"**Status:** {self.status}", ""]
        lines += _checklist(self.items)
        if self.todo:
            lines += ["The agent's to-do list:", "", *_checklist(self.todo)]
        if self.milestones:
            lines += ["<details><summary>Milestones</summary>", ""]
            lines += [f"1. {m}" for m in self.milestones]
            lines += ["", "</details>"]
        return "\n".join(lines).rstrip() + "\n"

    def tick_all(self) -> None:
        self.items = [(text, True) for text, _ in self.items]


def _checklist(items: Sequence[tuple[str, bool]]) -> list[str]:
    return [*(f"- [{'x' if done else ' '}] {one_line(text)}" for text, done in items), ""] if items else []


class ProgressComment:
    """Keeps a :class:`Progress` on the forge (when the work has an issue): found or created once, then
    edited by id. A forge that refuses is logged, never fatal: the comment is for people, the callbacks are
    the record. The agent's to-do list is shown at most every ``todo_seconds``."""

    def __init__(
        self, forge: Forge, repo: str, number: int, progress: Progress, *, todo_seconds: float = 10.0
    ) -> None:
        self._forge = forge
        self._repo = repo
        self._number = number
        self.progress = progress
        self._comment_id: int | None = None
        self._todo_seconds = todo_seconds
        self._shown_at = -math.inf

    async def update(self, status: str, milestone: str | None = None) -> None:
        self.progress.status = status
        if milestone:
            self.progress.milestones.append(milestone)
        await self._publish()

    async def todo(self, items: list[tuple[str, bool]]) -> None:
        self.progress.todo = items
        if time.monotonic() - self._shown_at >= self._todo_seconds:
            await self._publish()

    async def _publish(self) -> None:
        if self._number <= 0:
            return
        self._shown_at = time.monotonic()
        body = self.progress.render()
        try:
            if self._comment_id is not None:
                try:
                    await self._forge.update_comment(self._repo, self._comment_id, body)
                    return
                except ForgeError:  # deleted meanwhile: find or create it again
                    self._comment_id = None
            comment = await upsert_comment(self._forge, self._repo, self._number, self.progress.marker, body)
            self._comment_id = comment.id
        except (ForgeError, ForgeUnavailable) as exc:
            logger.warning(
                "progress comment not updated: repo=%s issue=%s problem=%s", self._repo, self._number, exc
            )


def progress_items(criteria: Sequence[str]) -> list[tuple[str, bool]]:
    return [(text, False) for text in criteria if text.strip()]
