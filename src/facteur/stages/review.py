"""The review stage: for each branch under review (the orchestrator's review run names the tasks no other
task builds on; a Froussard-path review names its pull request's branch), the unresolved review threads,
failing checks and notes go into the review prompt; the agent works on the same branch; its changes are
pushed; its verdict is posted on the pull request (one ``<!-- codex:review -->`` comment, updated); a pull
request with nothing outstanding is marked ready. The run succeeds when every branch is approved."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from facteur.domain.stage_prompts import APPROVED, CHANGES_REQUESTED, branch_review_prompt, verdict_of
from facteur.domain.untrusted import REVIEW_MARKER
from facteur.errors import ForgeError, ForgeUnavailable
from facteur.forge.comments import upsert_comment
from facteur.forge.port import PullRequest
from facteur.forge.review import fetch_review_context
from facteur.stages.bootstrap import StartPoint, bootstrap
from facteur.stages.event import ReviewTarget
from facteur.stages.git import Git
from facteur.stages.runner import StageFailed, StageOutcome, StageRun

logger = logging.getLogger(__name__)

_PULL_URL = re.compile(r"/pulls?/([0-9]{1,9})/?(?:[?#].*)?$")


@dataclass(frozen=True, slots=True)
class Verdict:
    target: ReviewTarget
    approved: bool
    pull: PullRequest | None
    ready: bool


async def run(stage: StageRun) -> StageOutcome:
    event = stage.event
    targets = event.review_targets or (
        ReviewTarget(key="", title=event.issue_title, branch=event.head, pull_request=None),
    )
    verdicts = [await _review(stage, number, target) for number, target in enumerate(targets, 1)]
    lines = [
        f"{'approved' if v.approved else 'changes requested'}: {v.target.branch}"
        + (f" ({v.pull.url}{', ready' if v.ready else ''})" if v.pull else "")
        for v in verdicts
    ]
    approved = all(v.approved for v in verdicts)
    summary = "\n".join([APPROVED if approved else CHANGES_REQUESTED, *lines])
    if not approved:
        raise StageFailed(summary)
    last = verdicts[-1]
    return StageOutcome(
        summary=summary, branch=last.target.branch, pull_request=last.pull.url if last.pull else None
    )


async def _review(stage: StageRun, number: int, target: ReviewTarget) -> Verdict:
    event = stage.event
    forge = stage.forge.forge
    git = stage.git
    checkout = await bootstrap(git, remote=stage.forge.remote, base=event.base, head=target.branch)
    if checkout.started_from is not StartPoint.HEAD:
        raise StageFailed(f"{target.branch} does not exist in {event.repository}: there is nothing to review")
    pull = await _pull(stage, target)
    notes: list[str] = []
    review = None if pull is None else await fetch_review_context(forge, event.repository, pull)
    if review is not None:
        notes += [f"review thread{f' ({t.url})' if t.url else ''}: {t.summary}" for t in review.threads]
        notes += [
            f"failing check {c.name}" + (f": {c.details}" if c.details else "") for c in review.failing_checks
        ]
    conflicts = await _conflicts(git, f"origin/{event.base}")
    if conflicts or (review is not None and review.has_merge_conflicts):
        files = f" ({', '.join(conflicts[:20])})" if conflicts else ""
        notes.append(
            f"{target.branch} conflicts with {event.base}{files}: merge {event.base} in, resolve, test"
        )
    prompt = event.prompt or branch_review_prompt(
        repository=event.repository,
        base=event.base,
        head=target.branch,
        idea_title=event.issue_title,
        pull_request=pull.url if pull else None,
        plan_markdown=event.plan_markdown,
        notes=notes,
    )
    context = stage.context(head=target.branch, feedback="\n".join(notes) or None)
    result = await stage.run_agent(prompt, label=f"review-{number}", context=context)
    verdict = verdict_of(result.final_message)
    if verdict and not result.succeeded:
        raise StageFailed(
            f"the review agent said {APPROVED} for {target.branch} but then {result.outcome.value}: "
            f"{result.message} (an approval counts only from an agent that finished its work)"
        )
    if verdict is None:
        raise StageFailed(
            f"the review agent {result.outcome.value} without a verdict for {target.branch}"
            + (f": {result.message}" if result.message else "")
            + f" (its final message must start with {APPROVED} or {CHANGES_REQUESTED})"
        )
    if await git.commit_all(
        f"Review of {target.branch}" + (f"\n\nRefs #{event.issue_number}" if event.issue_number else "")
    ):
        await stage.authenticate()
        await git.push(target.branch)
    text = result.final_message.strip()
    ready = False
    if pull is not None:
        heading = "approved" if verdict else "changes requested"
        body = f"{REVIEW_MARKER}\n### Review: {heading}\n\n{text[:60_000]}\n"
        try:
            await upsert_comment(forge, event.repository, pull.number, REVIEW_MARKER, body)
            if verdict and not notes and pull.draft:
                await forge.mark_ready(event.repository, pull)
                ready = True
        except (ForgeError, ForgeUnavailable) as exc:
            raise StageFailed(f"the verdict could not be posted on {pull.url}: {exc.message}") from None
    return Verdict(target, verdict, pull, ready)


def _pull_number(url: str | None) -> int:
    """The number at the end of a pull request's URL (``…/pull/12``), else 0."""
    found = _PULL_URL.search(url or "")
    return int(found.group(1)) if found else 0


async def _conflicts(git: Git, base: str) -> list[str]:
    """The files that conflict when ``base`` is merged into the checked-out branch (none: it merges)."""
    result = await git.run("merge-tree", "--write-tree", "--name-only", base, "HEAD", check=False)
    if result.returncode != 1:  # 0: merges cleanly; anything else: git could not tell
        return []
    # the tree's id, the conflicted files, a blank line, then git's messages
    lines = result.stdout.splitlines()[1:]
    files = lines[: lines.index("")] if "" in lines else lines
    return [name for name in files if name]


async def _pull(stage: StageRun, target: ReviewTarget) -> PullRequest | None:
    """The target's pull request: the one its task reported, else the event's (a Froussard-path review of
    one pull request), else the open one of its branch."""
    event = stage.event
    forge = stage.forge.forge
    number = _pull_number(target.pull_request) or (event.pull_number if len(event.review_targets) <= 1 else 0)
    if number:
        return await forge.get_pull(event.repository, number)
    pulls = await forge.pulls_for_head(event.repository, target.branch)
    if not pulls:
        logger.info("no open pull request for %s: the verdict stays in the run's summary", target.branch)
        return None
    return pulls[0]
