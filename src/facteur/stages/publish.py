"""What a stage publishes on the forge: the progress comment of a task, kept current, and the draft pull
request of a branch, found or opened with bounded retries. (Marker comments: facteur.forge.comments.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

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
    """The ``<!-- codex:progress -->`` comment of one task: a checklist seeded from the task's acceptance
    criteria, a status line, and a log of milestones; rendered whole at each update."""

    title: str
    marker: str
    items: list[tuple[str, bool]]
    milestones: list[str] = field(default_factory=list)
    status: str = "starting"

    def render(self) -> str:
        lines = [self.marker, f"### Progress: {self.title}", "", f"**Status:** {self.status}", ""]
        if self.items:
            lines += [f"- [{'x' if done else ' '}] {text}" for text, done in self.items]
            lines.append("")
        if self.milestones:
            lines += ["<details><summary>Milestones</summary>", ""]
            lines += [f"1. {m}" for m in self.milestones]
            lines += ["", "</details>"]
        return "\n".join(lines).rstrip() + "\n"

    def checklist(self) -> list[dict[str, object]]:
        return [{"text": text, "done": done} for text, done in self.items]

    def tick_all(self) -> None:
        self.items = [(text, True) for text, _ in self.items]


class ProgressComment:
    """Keeps a :class:`Progress` on the forge (when the work has an issue); a forge that refuses an update
    is logged, never fatal: the progress comment is for people, the callbacks are the record."""

    def __init__(self, forge: Forge, repo: str, number: int, progress: Progress) -> None:
        self._forge = forge
        self._repo = repo
        self._number = number
        self.progress = progress
        self.url: str | None = None

    async def update(self, status: str, milestone: str | None = None) -> None:
        self.progress.status = status
        if milestone:
            self.progress.milestones.append(milestone)
        if self._number <= 0:
            return
        try:
            comment = await upsert_comment(
                self._forge, self._repo, self._number, self.progress.marker, self.progress.render()
            )
        except (ForgeError, ForgeUnavailable) as exc:
            logger.warning(
                "progress comment not updated: repo=%s issue=%s problem=%s", self._repo, self._number, exc
            )
            return
        self.url = comment.url


def progress_items(criteria: Sequence[str], plan_checklist: Sequence[str] = ()) -> list[tuple[str, bool]]:
    return [(text, False) for text in (*criteria, *plan_checklist) if text.strip()]
