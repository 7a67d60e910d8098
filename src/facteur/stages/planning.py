"""The planning stage: the agent writes ``PLAN.md``; the stage checks it is in the plan format (one more
agent run with the problems fed back, then a clear failure), publishes it as the issue's plan comment and
sends it to Facteur."""

from __future__ import annotations

import logging
from pathlib import Path

from facteur.domain.plans import InvalidPlan, Plan, parse_plan
from facteur.domain.prompts import PLAN_FILE, join, plan_feedback
from facteur.domain.stage_prompts import idea_planning_prompt
from facteur.domain.untrusted import PLAN_MARKER
from facteur.errors import ForgeError, ForgeUnavailable
from facteur.forge.comments import upsert_comment
from facteur.stages.bootstrap import bootstrap
from facteur.stages.runner import StageFailed, StageOutcome, StageRun

logger = logging.getLogger(__name__)


async def run(stage: StageRun) -> StageOutcome:
    event = stage.event
    await bootstrap(stage.git, remote=stage.forge.remote, base=event.base, head=event.base)
    attempts = stage.settings.stage.plan_attempts
    plan_path = stage.dirs.workspace / PLAN_FILE
    problems: tuple[str, ...] = ()
    session: str | None = None
    markdown = ""
    plan: Plan | None = None
    for attempt in range(1, attempts + 1):
        plan_path.unlink(missing_ok=True)
        if event.orchestrated:
            prompt = idea_planning_prompt(
                repository=event.repository,
                base=event.base,
                title=event.issue_title,
                spec=event.spec,
                feedback=problems,
            )
        else:
            prompt = join(event.prompt, plan_feedback(problems))
        context = stage.context(feedback="\n".join(problems) if problems else None)
        result = await stage.run_agent(prompt, label=f"plan-{attempt}", context=context, session_id=session)
        session = result.session_id or session
        if not result.succeeded:
            raise StageFailed(f"the planning agent {result.outcome.value}: {result.message}")
        markdown = _read_plan(plan_path, result.final_message)
        if not markdown.strip():
            problems = (f"no plan was written to {PLAN_FILE}",)
        else:
            try:
                plan = parse_plan(markdown)
                break
            except InvalidPlan as exc:
                problems = exc.problems
        logger.warning("plan refused: attempt=%s/%s problems=%s", attempt, attempts, "; ".join(problems))
    if plan is None:
        raise StageFailed(
            f"the agent's plan is not in the plan format after {attempts} attempt(s): " + "; ".join(problems),
            artifacts=[stage.artifact("plan-refused.md", markdown, "plan")] if markdown else [],
        )
    if not markdown.lstrip().startswith(PLAN_MARKER):
        markdown = f"{PLAN_MARKER}\n{markdown.lstrip()}"
    artifacts = [stage.artifact("plan.md", markdown, "plan")]
    comment_url = await _publish(stage, markdown)
    answer = await stage.reporter.plan(markdown)
    if answer is not None and answer.status >= 400:
        why = "; ".join(answer.problems) or str(answer.body.get("detail") or answer.body.get("error") or "")
        raise StageFailed(f"Facteur did not take the plan (HTTP {answer.status}): {why}", artifacts=artifacts)
    keys = ", ".join(task.key for task in plan.tasks)
    where = f"; plan comment {comment_url}" if comment_url else ""
    return StageOutcome(summary=f"plan with {len(plan.tasks)} task(s): {keys}{where}", artifacts=artifacts)


async def _publish(stage: StageRun, markdown: str) -> str | None:
    event = stage.event
    if event.issue_number <= 0:
        logger.info("no issue: the plan is sent to Facteur only")
        return None
    try:
        comment = await upsert_comment(
            stage.forge.forge, event.repository, event.issue_number, PLAN_MARKER, markdown
        )
    except (ForgeError, ForgeUnavailable) as exc:
        raise StageFailed(
            f"the plan comment could not be posted on {event.repository}#{event.issue_number}: {exc.message}"
        ) from None
    return comment.url


def _read_plan(path: Path, final_message: str) -> str:
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    # an agent that answered with the plan instead of writing the file
    return final_message if PLAN_MARKER in final_message or "Task Breakdown" in final_message else ""
