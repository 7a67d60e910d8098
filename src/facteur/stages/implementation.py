"""The implementation stage: one task of the approved plan (or a Froussard-path implementation run).

The branch starts from the dependencies' branches; a failed earlier attempt's resume archive is restored
and its agent session resumed; the agent works; the stage commits (referencing the issue), pushes, makes
sure a draft pull request exists and keeps the progress comment current. Artifacts: the patch against the
base, ``git status``, and an archive of the changed files. On failure the resume archive is written.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tarfile
from typing import Any

from facteur.agents.port import AgentEvent, EventKind
from facteur.domain.stage_prompts import task_prompt
from facteur.domain.untrusted import PROGRESS_MARKER
from facteur.forge.port import PullRequest
from facteur.stages.bootstrap import StartPoint, bootstrap
from facteur.stages.publish import Progress, ProgressComment, ensure_draft_pull, progress_items
from facteur.stages.resume import ResumeArchive
from facteur.stages.runner import StageFailed, StageOutcome, StageRun

logger = logging.getLogger(__name__)


async def run(stage: StageRun) -> StageOutcome:
    event = stage.event
    git = stage.git
    task = event.task
    checkout = await bootstrap(
        git,
        remote=stage.forge.remote,
        base=event.base,
        head=event.head,
        dependencies=[d.branch for d in event.dependencies],
    )
    if checkout.missing:
        raise StageFailed(
            "the branches of dependencies that succeeded are missing from the repository: "
            + ", ".join(checkout.missing)
        )
    key = task.key if task else event.head
    title = f"{task.key} \u2014 {task.title}" if task else event.issue_title or event.head
    marker = f"{PROGRESS_MARKER}\n<!-- facteur:task:{key} -->" if task else PROGRESS_MARKER
    progress = ProgressComment(
        stage.forge.forge,
        event.repository,
        event.issue_number,
        Progress(title=title, marker=marker, items=progress_items(task.acceptance_criteria if task else ())),
    )
    started_from = f"from {checkout.started_from}" + (
        f" (merged {', '.join(checkout.merged)})" if checkout.merged else ""
    )
    await progress.update("working", f"Branch `{event.head}` checked out {started_from}.")
    archive = ResumeArchive(
        stage.settings.stage.resume_dir.resolve(), idea=str(event.run.idea_id or event.repository), task=key
    )
    session: str | None = None
    if archive.exists():
        restored = await archive.restore(git)
        if restored is not None:
            session = restored.session_id
            note = "patch restored" if restored.patch_applied else "patch not applied"
            await progress.update("working", f"Resumed attempt {restored.attempt}'s work ({note}).")
            logger.info(
                "resumed: attempt=%s session=%s patch=%s", restored.attempt, session, restored.patch_applied
            )

    async def on_event(agent_event: AgentEvent) -> None:
        if agent_event.kind is EventKind.TODO_LIST:
            items = [
                (str(i.get("text", "")), bool(i.get("done")))
                for i in agent_event.detail.get("items") or []
                if isinstance(i, dict)
            ]
            stage.reporter.progress("the agent's to-do list", [{"text": t, "done": d} for t, d in items])
            await progress.todo(items)

    if event.prompt:
        prompt = event.prompt
    elif task is None:
        raise StageFailed("the event has neither a prompt nor a task (facteur.task): nothing to implement")
    else:
        prompt = task_prompt(
            repository=event.repository,
            base=event.base,
            head=event.head,
            idea_title=event.issue_title,
            task=task,
            plan_markdown=event.plan_markdown,
            dependencies=event.dependencies,
            issue_number=event.issue_number,
        )
    result = await stage.run_agent(
        prompt, label="implement", context=stage.context(), session_id=session, on_event=on_event
    )
    if not result.succeeded:
        saved = await archive.save(
            git,
            started_from=checkout.sha,
            session_id=result.session_id,
            attempt=event.run.attempt,
            reason=result.message,
        )
        artifacts = await _artifacts(stage, f"origin/{event.base}")
        await progress.update("failed", f"The agent {result.outcome.value}: {result.message}")
        raise StageFailed(
            f"the agent {result.outcome.value}: {result.message} (resume archive: {saved})",
            artifacts=artifacts,
        )
    stage.reporter.progress("the agent finished; committing")
    issue = f"\n\nRefs #{event.issue_number}" if event.issue_number else ""
    idea = f"\n\nIdea {event.run.idea_id}, task {key}." if event.run.idea_id else ""
    status = await git.status_porcelain()  # what the agent left, before the commit takes it in
    commit = await git.commit_all(f"{title}{idea}{issue}")
    changed = await git.changed_files(f"origin/{event.base}")
    if not changed:
        raise StageFailed(f"the agent changed nothing: {event.head} has no change against {event.base}")
    # a branch built on dependencies must also change something beyond their work (a branch started from
    # the base, or pushed by an earlier attempt, is judged against the base alone)
    if checkout.started_from is StartPoint.DEPENDENCIES and not await git.changed_files(checkout.sha):
        raise StageFailed(
            f"the agent changed nothing: {event.head} has no change beyond its dependencies' work"
        )
    await stage.authenticate()
    await git.push(event.head)
    stage_settings = stage.settings.stage

    async def publish() -> PullRequest:
        await progress.update("working", f"Pushed `{event.head}`" + (f" ({commit[:12]})." if commit else "."))
        return await ensure_draft_pull(
            stage.forge.forge,
            event.repository,
            head=event.head,
            base=event.base,
            title=title,
            body=_pull_body(stage, result.final_message),
            attempts=stage_settings.pull_request_attempts,
            backoff_seconds=stage_settings.pull_request_backoff_seconds,
        )

    # the pull request and the artifacts do not depend on each other
    pull, artifacts = await asyncio.gather(
        publish(), _artifacts(stage, f"origin/{event.base}", status=status, files=changed)
    )
    archive.clear()
    progress.progress.tick_all()
    await progress.update("done", f"Draft pull request {pull.url}; {len(changed)} file(s) changed.")
    summary = result.final_message.strip() or f"{len(changed)} file(s) changed"
    return StageOutcome(summary=summary, branch=event.head, pull_request=pull.url, artifacts=artifacts)


def _pull_body(stage: StageRun, summary: str) -> str:
    event = stage.event
    lines = []
    if event.task:
        lines += [f"Task `{event.task.key}` of idea {event.run.idea_id}: {event.task.title}", ""]
        if event.task.acceptance_criteria:
            lines += ["Acceptance criteria:", *(f"- [ ] {c}" for c in event.task.acceptance_criteria), ""]
    if event.dependencies:
        lines += ["Builds on: " + ", ".join(f"`{d.branch}`" for d in event.dependencies), ""]
    if summary.strip():
        lines += ["Agent summary:", "", summary.strip()[:20_000], ""]
    if event.issue_number:
        lines.append(f"Refs #{event.issue_number}")
    return "\n".join(lines).strip() + "\n"


async def _artifacts(
    stage: StageRun, against: str, *, status: str | None = None, files: list[str] | None = None
) -> list[dict[str, Any]]:
    """The patch against ``against``, ``git status`` (as given: taken before a commit) and the changed
    files' archive."""
    git = stage.git
    patch = await git.diff_patch(against)
    if status is None:
        status = await git.status_porcelain()
    if files is None:
        files = await git.changed_files(against)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in files:
            path = stage.dirs.workspace / name
            if path.is_file():
                archive.add(path, arcname=name)
    return [
        stage.artifact("changes.patch", patch, "patch"),
        stage.artifact("git-status.txt", status, "status"),
        stage.artifact("changes.tar.gz", buffer.getvalue(), "archive"),
    ]
