"""The prompts of the orchestrator's runs: plan an idea, carry out one task of its plan, review the result.

Unlike the Froussard-path prompts (:mod:`facteur.domain.prompts`), the agent here only works in its
checkout: the stage runner publishes the plan, commits, pushes, opens the draft pull request and keeps the
progress comment, so the prompts say so. Everything a person wrote (the spec, the plan, summaries, review
threads) is cleaned and fenced as in the other prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from facteur.domain.prompts import PLAN_FILE, bullets, join, plan_feedback, plan_format_help
from facteur.domain.untrusted import clean, fence, one_line

#: the first line of a review run's final message: its verdict
APPROVED = "APPROVED"
CHANGES_REQUESTED = "CHANGES REQUESTED"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInfo:
    """The task a run carries out, as its event gives it."""

    key: str
    title: str
    description: str
    acceptance_criteria: tuple[str, ...]
    paths: tuple[str, ...]
    depends_on: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "acceptanceCriteria": list(self.acceptance_criteria),
            "paths": list(self.paths),
            "dependsOn": list(self.depends_on),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependency:
    """A task this one builds on: its branch and what its run said it did."""

    key: str
    title: str
    branch: str
    summary: str


def spec_markdown(title: str, spec: Mapping[str, Any]) -> str:
    """The idea as a person submitted it: title, goal, constraints, success metrics."""
    lines = [f"Title: {one_line(title)}", "", "Goal:", str(spec.get("goal") or "").strip() or "(none)"]
    constraints = str(spec.get("constraints") or "").strip()
    if constraints:
        lines += ["", "Constraints:", constraints]
    metrics = [str(m) for m in spec.get("success_metrics") or [] if str(m).strip()]
    if metrics:
        lines += ["", "Success metrics:", *(f"- {one_line(m)}" for m in metrics)]
    return "\n".join(lines)


def idea_planning_prompt(
    *,
    repository: str,
    base: str,
    title: str,
    spec: Mapping[str, Any],
    feedback: Sequence[str] = (),
) -> str:
    """Plan an idea into tasks; the plan goes to ``PLAN.md``."""
    return join(
        "Write the implementation plan for the idea below. Facteur reads its Task Breakdown to schedule "
        "the work, one run per task, each on its own branch that starts from the branches of the tasks it "
        "depends on; so split the work into tasks that can be done and reviewed one at a time.",
        f"Repository: {one_line(repository)}\nBase branch: {one_line(base)}",
        plan_feedback(feedback),
        bullets(
            "Execution contract:",
            f"Write the plan, and nothing else, to `{PLAN_FILE}` at the root of the working directory, "
            "following the template below to the letter. Facteur publishes it; do not commit it.",
            "Read the repository to name exact paths, modules and symbols.",
            "Do not change any other file.",
            "Keep it short and concrete: no open questions, no alternatives left for later.",
        ),
        plan_format_help(),
        fence(spec_markdown(title, spec), "The idea"),
    )


def task_prompt(
    *,
    repository: str,
    base: str,
    head: str,
    idea_title: str,
    task: TaskInfo,
    plan_markdown: str | None,
    dependencies: Sequence[Dependency],
    issue_number: int = 0,
) -> str:
    """Carry out one task of the approved plan on its branch."""
    criteria = [one_line(c) for c in task.acceptance_criteria]
    paths = [one_line(p) for p in task.paths]
    # the plan's words and the dependencies' summaries (an agent's output) are quoted, never instructions
    deps = [
        f"- {one_line(d.key)} ({one_line(d.title)}), branch {one_line(d.branch)}: "
        f"{one_line(d.summary) or 'no summary'}"
        for d in dependencies
    ]
    refs = f" Issue: #{issue_number}." if issue_number else ""
    return join(
        f"Carry out task `{one_line(task.key)}` of the approved plan for the idea "
        f"\u201c{one_line(idea_title)}\u201d, and only that task. Other tasks of the plan run separately.",
        f"Repository: {one_line(repository)}\nBase branch: {one_line(base)}\n"
        f"Your branch: {one_line(head)} (already checked out; it holds the work of the tasks this one "
        f"depends on).{refs}",
        fence(
            "\n".join(
                (
                    f"{one_line(task.key)} \u2014 {one_line(task.title)}",
                    "",
                    clean(task.description).strip() or "(no description)",
                )
            ),
            "The task",
        ),
        fence("\n".join(f"- {c}" for c in criteria), "Acceptance criteria (all must hold when you finish)")
        if criteria
        else "",
        fence("\n".join(f"- {p}" for p in paths), "Paths it is expected to touch") if paths else "",
        fence("\n".join(deps), "Work already done by the tasks it depends on") if deps else "",
        bullets(
            "Execution contract:",
            "Change the files in the working directory; run the repository's formatters, linters and "
            "tests, and fix what fails.",
            "Do not commit, push, open pull requests or post comments: Facteur commits your changes, "
            "pushes the branch, opens the draft pull request and keeps the progress comment.",
            "Finish with a short summary of what you changed and how you checked it; it becomes the "
            "task's summary for the tasks that depend on it.",
            "When something blocks you, say exactly what in your summary and stop; do not guess.",
        ),
        fence(clean(plan_markdown or "").strip(), "Approved plan (for context)") if plan_markdown else "",
    )


def branch_review_prompt(
    *,
    repository: str,
    base: str,
    head: str,
    idea_title: str,
    pull_request: str | None,
    plan_markdown: str | None,
    notes: Sequence[str],
) -> str:
    """Review a task branch: address the notes, run the tests, give a verdict."""
    return join(
        f"Review the work on branch `{one_line(head)}` for the idea \u201c{one_line(idea_title)}\u201d and "
        "bring it to a state where it can be merged.",
        f"Repository: {one_line(repository)}\nBase branch: {one_line(base)}\nBranch: {one_line(head)} "
        f"(checked out)\nPull request: {one_line(pull_request or 'none yet')}",
        fence(
            "\n".join(f"- {one_line(n)}" for n in notes),
            "Outstanding review threads, failing checks, conflicts",
        )
        if notes
        else "No review thread is open, no check is failing and the branch merges cleanly.",
        bullets(
            "Execution contract:",
            "Check every acceptance criterion of the plan against the code; run the tests.",
            "Fix what is wrong in the working directory; Facteur commits and pushes your changes.",
            f"The first line of your final message is your verdict, exactly `{APPROVED}` or "
            f"`{CHANGES_REQUESTED}`; then say what you checked and, if not approved, what remains.",
        ),
        fence(clean(plan_markdown or "").strip(), "Approved plan") if plan_markdown else "",
    )


def verdict_of(message: str) -> bool | None:
    """True for an approving final message, False for changes requested, None when it gives no verdict."""
    for line in message.splitlines():
        text = line.strip().strip("*`#> ").upper()
        if not text:
            continue
        if text.startswith(APPROVED):
            return True
        if text.startswith(CHANGES_REQUESTED):
            return False
        return None
    return None
