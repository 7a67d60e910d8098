"""The prompts of the three GitHub stages: planning, implementation and review.

Each prompt opens with what the run must achieve, then header lines naming the repository, the issue and the
branches, then an execution contract, then the material to work from. Everything a person wrote on the forge
(titles, bodies, the plan, review threads, check output) is cleaned with :func:`untrusted.clean`; bodies and
the plan are fenced with :func:`untrusted.fence`, and short texts are folded onto one line so that none of
them can add lines of its own to the prompt (:func:`untrusted.one_line`).
"""

from __future__ import annotations

from collections.abc import Sequence

from facteur.domain.plans import PLAN_SECTIONS, READY_CHECKLIST, checklist
from facteur.domain.review_context import FailingCheck, ReviewContext
from facteur.domain.untrusted import (
    PLAN_MARKER,
    PROGRESS_MARKER,
    REVIEW_MARKER,
    clean,
    fence,
    one_line,
)

#: where the planning run leaves its plan for the stage runner to publish
PLAN_FILE = "PLAN.md"
PROGRESS_COMMAND = "facteur progress-comment"
NO_DESCRIPTION = "No description provided."

#: how a plan's Task Breakdown lists its tasks, for the planning run (facteur.domain.plans reads it)
TASK_FORMAT_HELP = "\n".join(
    (
        "Task format (Facteur reads the Task Breakdown to schedule the work, one run per task):",
        "- Give each task its own `#### <key> \u2014 <title>` heading under `### Task Breakdown`. A key "
        "is 1 to 63 lower-case letters, digits, `-` and `_`, starts with a letter or a digit, and is "
        "unique in the plan.",
        "- Under the heading, say in a short paragraph what the task changes and why.",
        "- Then three bullets: `- Depends on:` the keys of the tasks whose changes it builds on, or "
        "`none`; `- Paths:` the files and directories it touches, separated by commas, or `none`; "
        "`- Heavy: yes` when it needs a large executor (long build, big test suite), otherwise "
        "`- Heavy: no`.",
        "- Then the line `Acceptance criteria:` and a `- [ ]` list: at least one criterion, one line each, "
        "that a reviewer can check.",
        "- Dependencies must not form a cycle. Use `####` headings for tasks only.",
        "Example of one task:",
        "```markdown",
        "#### search-cache \u2014 Cache search results",
        "",
        "Keep the last 1,000 search results in memory so that a repeated query skips the database.",
        "",
        "- Depends on: `search-index`",
        "- Paths: `src/search/cache.py`, `tests/search/test_cache.py`",
        "- Heavy: no",
        "",
        "Acceptance criteria:",
        "- [ ] A repeated query is answered without a database call (unit test).",
        "- [ ] The cache never holds more than 1,000 results.",
        "```",
    )
)

_SECTION_GUIDANCE: dict[str, str] = {
    "Objective": "the outcome in one or two sentences, and how anyone can tell it was reached.",
    "Context & Constraints": "the code, services and rules that shape the work, with paths and links.",
    "Task Breakdown": "the tasks, in the task format above, each small enough for one pull request and "
    "naming the files and symbols it changes.",
    "Deliverables": "what exists when the work is done: code, tests, docs, migrations, configuration.",
    "Validation & Observability": "the exact commands (with working directory and expected output) and "
    "the signals that prove it works.",
    "Risks & Contingencies": "what could go wrong and what to do then, rollback included.",
    "Communication & Handoff": "who must hear about the change and what a reviewer needs to know.",
    "Ready Checklist": "leave the four items unchecked; the implementation run ticks them.",
}


def plan_format_help() -> str:
    """The plan template to copy, the task format and what each section holds (both planning prompts)."""
    return join(
        f"Plan template (copy it as it stands, then fill in every section):\n{plan_template()}",
        TASK_FORMAT_HELP,
        bullets("What each section holds:", *(f"{name}: {hint}" for name, hint in _SECTION_GUIDANCE.items())),
    )


def plan_feedback(problems: Sequence[str]) -> str:
    """What a planning run's next attempt is told when its plan was refused (empty when it was not)."""
    if not problems:
        return ""
    return bullets(
        f"Your previous `{PLAN_FILE}` was refused. Fix every problem below and write the whole plan again:",
        *(one_line(problem) for problem in problems),
    )


def plan_template() -> str:
    """The skeleton every plan follows: the plan marker line, then the eight sections."""
    lines = [PLAN_MARKER]
    for section in PLAN_SECTIONS:
        lines.extend(("", f"### {section}"))
    lines.append(checklist(READY_CHECKLIST))
    return "\n".join(lines)


def planning_prompt(
    *,
    repository: str,
    issue_number: int,
    issue_title: str,
    issue_url: str,
    base: str,
    head: str,
    issue_body: str,
) -> str:
    """The prompt of a planning run: write the plan that the implementation run will carry out."""
    return join(
        "Write the implementation plan for the GitHub issue below. It is published exactly as you write "
        "it and the next run carries it out step by step, so make it final: no open questions, no "
        "alternatives left for later.",
        _header(
            repository=repository,
            issue=_issue_line(issue_number, issue_title),
            issue_url=issue_url,
            base=base,
            branch=("Proposed feature branch", head),
        ),
        bullets(
            "Execution contract:",
            f"The issue has a placeholder comment starting with `{PLAN_MARKER}`; Facteur's stage runner "
            "replaces it with your plan. Do not post, edit or delete comments yourself.",
            f"Write the plan, and nothing else, to `{PLAN_FILE}` at the root of the working directory, "
            "following the template below to the letter.",
            "Name exact paths, modules and symbols; never point at \u201cthe relevant files\u201d.",
            "Give each command with the directory it runs in and the output that shows it worked.",
            "Call out new dependencies, database migrations, secrets and approvals the work needs.",
            "The `gh` CLI is authenticated: use it to read issues, pull requests and code.",
            f"Search the web when the plan rests on facts outside the repository. Link files as GitHub blob "
            f"URLs on the base branch (https://github.com/{one_line(repository)}/blob/{one_line(base)}/<path>).",
            "Never leave citation placeholders or unresolved references in the plan.",
            "Keep it short and concrete.",
        ),
        plan_format_help(),
        fence(_body_or_fallback(issue_body), "Issue body"),
    )


def implementation_prompt(
    *,
    repository: str,
    issue_number: int,
    issue_title: str,
    issue_url: str,
    base: str,
    head: str,
    issue_body: str,
    plan_body: str | None,
) -> str:
    """The prompt of an implementation run: carry out the approved plan and open a draft pull request."""
    plan = clean(plan_body or "").strip()
    plan_block = (
        fence(plan, "Approved plan")
        if plan
        else "Approved plan: none was supplied. Work from the issue body, and set out the plan you followed "
        "in the pull request description."
    )
    return join(
        "Carry out the approved plan for the GitHub issue below from start to finish. Do not stop before "
        "validation passes and a pull request that references the issue exists.",
        _header(
            repository=repository,
            issue=_issue_line(issue_number, issue_title),
            issue_url=issue_url,
            base=base,
            branch=("Implementation branch", head),
        ),
        plan_block,
        bullets(
            "Execution contract:",
            "Follow the plan. When you depart from it, record what changed and why in the progress comment "
            "and the pull request description.",
            f"Keep the issue's progress comment (it starts with `{PROGRESS_MARKER}`) current with "
            f"`{PROGRESS_COMMAND}`, which creates it the first time and updates it afterwards; update it at "
            "each milestone of the plan.",
            f"Work on `{one_line(head)}`, created from `{one_line(base)}` if it does not exist yet. "
            f"Commit with messages that reference #{issue_number}, and push.",
            "Run the repository's formatters, linters and tests before every push.",
            f"Open a draft pull request from `{one_line(head)}` into `{one_line(base)}` (or update the one "
            "that is open), fill in `.github/PULL_REQUEST_TEMPLATE.md` when the repository has one, and link "
            f"the issue (`Closes #{issue_number}`).",
            "Do not finish until the pull request exists and CI has passed, or every failure is explained in "
            "the pull request.",
            "When something blocks you, say so in the progress comment with what you need; do not guess.",
        ),
        fence(_body_or_fallback(issue_body), "Issue body"),
    )


def review_prompt(
    *,
    repository: str,
    pull_number: int,
    pull_title: str,
    pull_url: str,
    base: str,
    head: str,
    pull_body: str,
    issue_number: int,
    context: ReviewContext | None,
    plan_body: str | None = None,
) -> str:
    """The prompt of a review run: bring the pull request to a mergeable state and give a verdict."""
    title = one_line(pull_title) or f"Pull request #{pull_number}"
    plan = clean(plan_body or "").strip()
    plan_duty = (
        "Treat every step of the approved plan below as acceptance work."
        if plan
        else f"Read the latest comment on issue #{issue_number} that starts with `{PLAN_MARKER}` (the "
        "approved plan) and treat every step of it as acceptance work."
    )
    return join(
        "Bring the pull request below to a state where it can be merged, and finish with an explicit "
        "verdict: approved, or what still stands in the way.",
        "\n".join(
            (
                f"Repository: {one_line(repository)}",
                f"Pull request: #{pull_number} - {title}",
                f"Pull request URL: {one_line(pull_url)}",
                f"Issue: #{issue_number}",
                f"Base branch: {one_line(base)}",
                f"Codex branch: {one_line(head)}",
            )
        ),
        _feedback(context),
        bullets(
            "Execution contract:",
            f"Keep one pull request comment starting with `{REVIEW_MARKER}` as your review log; update it "
            "instead of adding new ones.",
            plan_duty,
            "For each step, gather the evidence that it is done: test output, paths and lines, links.",
            f"Keep the issue's progress comment (it starts with `{PROGRESS_MARKER}`) current with "
            f"`{PROGRESS_COMMAND}`.",
            "Address every open review thread and failing check, then run the tests again.",
            f"Keep `{one_line(head)}` rebased on `{one_line(base)}` and resolve any conflicts.",
            "When everything is done, post a comment approving the pull request (`gh pr comment`). Otherwise "
            "record what remains in the review log and keep iterating.",
        ),
        fence(plan, "Approved plan") if plan else "",
        fence(_body_or_fallback(pull_body), "Pull request description"),
    )


def _feedback(context: ReviewContext | None) -> str:
    if context is None or not (context.summary or context.threads or context.failing_checks):
        notes = context.additional_notes if context is not None else ()
        return join(
            "Outstanding items from GitHub: no review threads or failing checks were reported. Confirm "
            "that the pull request is mergeable (checks green, no conflicts, every plan step done) and "
            "stop as soon as it is.",
            bullets("Additional notes:", *notes) if notes else "",
        )
    threads = [
        _item(thread.summary, f"reviewer: {one_line(thread.author)}" if thread.author else "", thread.url)
        for thread in context.threads
    ]
    checks = [_item(check.name, _check_detail(check), check.url) for check in context.failing_checks]
    return join(
        "\n".join(("Outstanding items from GitHub:", one_line(context.summary or ""))).rstrip(),
        fence("\n".join(threads), "Open review threads") if threads else "",
        fence("\n".join(checks), "Failing checks") if checks else "",
        bullets("Additional notes:", *context.additional_notes) if context.additional_notes else "",
    )


def _check_detail(check: FailingCheck) -> str:
    parts: list[str] = []
    if check.conclusion:
        parts.append(f"conclusion: {one_line(check.conclusion)}")
    if check.details:
        parts.append(f"details: {one_line(check.details)}")
    return "; ".join(parts)


def _item(text: str, detail: str, url: str | None) -> str:
    line = f"- {one_line(text)}"
    if detail:
        line += f" ({detail})"
    if url:
        line += f" \u2192 {one_line(url)}"
    return line


def _header(*, repository: str, issue: str, issue_url: str, base: str, branch: tuple[str, str]) -> str:
    label, name = branch
    return "\n".join(
        (
            f"Repository: {one_line(repository)}",
            f"Issue: {issue}",
            f"Issue URL: {one_line(issue_url)}",
            f"Base branch: {one_line(base)}",
            f"{label}: {one_line(name)}",
        )
    )


def _issue_line(number: int, title: str) -> str:
    return f"#{number} - {one_line(title) or f'Issue #{number}'}"


def bullets(title: str, *items: str) -> str:
    """A title line, then one ``- item`` line per item."""
    return "\n".join((title, *(f"- {item}" for item in items)))


def _body_or_fallback(body: str) -> str:
    text = clean(body).strip()
    return text or NO_DESCRIPTION


def join(*blocks: str) -> str:
    """The non-empty blocks, a blank line apart."""
    return "\n\n".join(block for block in blocks if block)
