"""Idea specs: the structured issue a person files to ask Facteur for a change.

An idea spec is an issue body carrying the marker ``<!-- facteur:idea -->`` and five sections (Goal,
Constraints, Success metrics, Priority, Risk labels), as in ``examples/github/ISSUE_TEMPLATE/idea.md``.
Parsing is lenient in form (headings of level 2 to 4, any case, ``-``/``*``/``+`` or numbered lists) and
strict in content: a section that is missing, empty, still holds the template's hint, or says something that
cannot be understood is a problem, and every problem is reported at once so the author fixes them in one edit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from facteur.domain.markdown import DECORATION, LIST_ITEM, Fences, atx_heading, heading_name, quote
from facteur.domain.untrusted import IDEA_MARKER, IDEA_SPEC_MARKER, clean, collapse
from facteur.errors import InvalidInput


class Section(StrEnum):
    GOAL = "Goal"
    CONSTRAINTS = "Constraints"
    SUCCESS_METRICS = "Success metrics"
    PRIORITY = "Priority"
    RISK_LABELS = "Risk labels"


class ProblemKind(StrEnum):
    MISSING = "missing"
    DUPLICATE = "duplicate"
    EMPTY = "empty"
    HINT = "hint"
    BAD_PRIORITY = "bad_priority"
    BAD_RISK_LABEL = "bad_risk_label"
    NO_SUCCESS_METRIC = "no_success_metric"


#: the hint each section holds in the shipped template (the author replaces it)
HINTS: dict[Section, str] = {
    Section.GOAL: "Replace this line: the outcome you want, in one or two sentences.",
    Section.CONSTRAINTS: "Replace this line: what the change must respect (interfaces to keep, deadlines, "
    'budgets), or "None".',
    Section.SUCCESS_METRICS: "Replace this line: one measurable sign that the goal is met per list item.",
    Section.PRIORITY: "Replace this line with one of P0, P1, P2 or P3 (P0 is the most urgent).",
    Section.RISK_LABELS: "Replace this line with risk labels separated by commas (for example "
    'database-migration, auth) or "none".',
}
#: what belongs in each section, as the problem messages phrase it
_WANTED: dict[Section, str] = {
    Section.GOAL: "the outcome you want, in a sentence or two",
    Section.CONSTRAINTS: "what the change must respect, or `None` if nothing",
    Section.SUCCESS_METRICS: "at least one measurable outcome, one per list item (`- ...`)",
    Section.PRIORITY: "one of `P0`, `P1`, `P2`, `P3` (`P0` is the most urgent)",
    Section.RISK_LABELS: "risk labels separated by commas, such as `database-migration, auth`, or `none`",
}
_NAMES: dict[str, Section] = {
    "goal": Section.GOAL,
    "constraints": Section.CONSTRAINTS,
    "constraint": Section.CONSTRAINTS,
    "success metrics": Section.SUCCESS_METRICS,
    "success metric": Section.SUCCESS_METRICS,
    "priority": Section.PRIORITY,
    "risk labels": Section.RISK_LABELS,
    "risk label": Section.RISK_LABELS,
}
NO_RISK = "none"
MAX_PRIORITY = 3

_PRIORITY = re.compile(r"^[pP]?([0-9])$")
_RISK_LABEL = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class SpecProblem:
    section: Section
    kind: ProblemKind
    #: what is wrong and how to fix it, for the issue's author
    message: str

    def __str__(self) -> str:
        return f"{self.section}: {self.message}"


class InvalidIdeaSpec(InvalidInput):
    """The idea spec is incomplete or cannot be understood."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems: tuple[SpecProblem, ...] = tuple(problems)
        super().__init__("invalid idea spec: " + "; ".join(str(problem) for problem in self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class IdeaSpec:
    goal: str
    constraints: str
    success_metrics: tuple[str, ...]
    #: 0 is the most urgent, 3 the least
    priority: int
    #: lower-case, deduplicated, in the author's order; empty for ``none``
    risk_labels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The spec as stored with the idea (``Idea.spec``) and sent on ``codex.intent``."""
        return {
            "goal": self.goal,
            "constraints": self.constraints,
            "success_metrics": list(self.success_metrics),
            "priority": self.priority,
            "risk_labels": list(self.risk_labels),
        }


def is_idea_spec(body: str) -> bool:
    """Whether an issue body asks to be read as an idea spec (it carries the idea marker)."""
    return IDEA_MARKER in clean(body)


def parse_idea_spec(body: str) -> IdeaSpec:
    """Read an idea spec; raise :class:`InvalidIdeaSpec` listing every problem found.

    The marker is not required here (:func:`is_idea_spec` decides whether a body is a spec at all).
    """
    sections, problems = _sections(clean(body))
    texts: dict[Section, str] = {}
    for section in Section:
        text = sections.get(section)
        if text is None:
            problems.append(_problem(section, ProblemKind.MISSING))
        elif not text:
            problems.append(_problem(section, ProblemKind.EMPTY))
        elif HINTS[section] in collapse(text):
            problems.append(_problem(section, ProblemKind.HINT))
        else:
            texts[section] = text
    goal, constraints = texts.get(Section.GOAL), texts.get(Section.CONSTRAINTS)
    metrics = _read_metrics(texts.get(Section.SUCCESS_METRICS), problems)
    priority = _read_priority(texts.get(Section.PRIORITY), problems)
    labels = _read_risk_labels(texts.get(Section.RISK_LABELS), problems)
    # a section without a value always comes with a problem; the checks for None are for the type checker
    if (
        problems
        or goal is None
        or constraints is None
        or metrics is None
        or priority is None
        or labels is None
    ):
        order = list(Section)
        raise InvalidIdeaSpec(sorted(problems, key=lambda problem: order.index(problem.section)))
    return IdeaSpec(
        goal=goal, constraints=constraints, success_metrics=metrics, priority=priority, risk_labels=labels
    )


def render_spec_problems(problems: Sequence[SpecProblem]) -> str:
    """The body of the one comment Facteur keeps on an issue whose idea spec is invalid."""
    count = len(problems)
    lines = [
        IDEA_SPEC_MARKER,
        "**Facteur cannot start on this idea yet:** its spec has "
        f"{count} problem{'' if count == 1 else 's'}.",
        "",
        *(f"- **{problem.section}**: {problem.message}" for problem in problems),
        "",
        "To fix it, edit the issue description (not this comment). Each section is a `###` heading followed "
        "by its content, in this shape:",
        "",
        "```markdown",
        "### Goal",
        "Search results load in under a second.",
        "### Constraints",
        "Keep the public search API unchanged.",
        "### Success metrics",
        "- p95 search latency below 1 s on the staging data set",
        "### Priority",
        "P1",
        "### Risk labels",
        "database-migration, auth",
        "```",
        "",
        "Facteur reads the issue again when it is edited and updates this comment; planning starts as soon "
        "as the spec is valid.",
    ]
    return "\n".join(lines)


def _sections(text: str) -> tuple[dict[Section, str], list[SpecProblem]]:
    """The text under each known heading; the text before the first one and under unknown headings is
    ignored."""
    found: dict[Section, list[str]] = {}
    problems: list[SpecProblem] = []
    current: list[str] | None = None
    fences = Fences()
    for line in text.split("\n"):
        heading = None if fences.code(line) else atx_heading(line)
        if heading is None:
            if current is not None:
                current.append(line)
            continue
        level, name = heading
        section = _NAMES.get(heading_name(name))
        if section is None or not 2 <= level <= 4:
            current = None
        elif section in found:
            if not any(p.section is section and p.kind is ProblemKind.DUPLICATE for p in problems):
                problems.append(_problem(section, ProblemKind.DUPLICATE))
            current = None
        else:
            current = found[section] = []
    return {section: "\n".join(lines).strip() for section, lines in found.items()}, problems


def _read_metrics(text: str | None, problems: list[SpecProblem]) -> tuple[str, ...] | None:
    if text is None:
        return None
    items: list[list[str]] = []
    for line in text.split("\n"):
        if match := LIST_ITEM.match(line):
            items.append([line[match.end() :].strip()])
        elif items and line.strip():
            items[-1].append(line.strip())
    metrics = tuple(metric for item in items if (metric := " ".join(part for part in item if part)))
    if not metrics:
        problems.append(_problem(Section.SUCCESS_METRICS, ProblemKind.NO_SUCCESS_METRIC))
        return None
    return metrics


def _read_priority(text: str | None, problems: list[SpecProblem]) -> int | None:
    if text is None:
        return None
    value = _unlist(text).strip(DECORATION)
    match = _PRIORITY.match(value)
    if match is None or int(match.group(1)) > MAX_PRIORITY:
        problems.append(
            _problem(
                Section.PRIORITY,
                ProblemKind.BAD_PRIORITY,
                f"{_quote(value)} is not a priority: write one of `P0`, `P1`, `P2`, `P3` "
                "(`P0` is the most urgent; `0` to `3` work too).",
            )
        )
        return None
    return int(match.group(1))


def _read_risk_labels(text: str | None, problems: list[SpecProblem]) -> tuple[str, ...] | None:
    if text is None:
        return None
    labels: list[str] = []
    before = len(problems)
    for line in text.split("\n"):
        for part in _unlist(line).split(","):
            label = part.strip(DECORATION).lower()
            if not label:
                continue
            if _RISK_LABEL.match(label) is None:
                problems.append(
                    _problem(
                        Section.RISK_LABELS,
                        ProblemKind.BAD_RISK_LABEL,
                        f"{_quote(label)} is not a risk label: a label is lower-case letters, digits and "
                        "hyphens (like `database-migration`); separate labels with commas or put one per "
                        "list item.",
                    )
                )
            elif label not in labels:
                labels.append(label)
    if NO_RISK in labels and len(labels) > 1:
        message = "`none` cannot be combined with other labels: keep `none` alone, or list only the risks."
        problems.append(_problem(Section.RISK_LABELS, ProblemKind.BAD_RISK_LABEL, message))
    elif not labels and len(problems) == before:
        message = "no label given: list the risks separated by commas, or write `none`."
        problems.append(_problem(Section.RISK_LABELS, ProblemKind.BAD_RISK_LABEL, message))
    if len(problems) > before:
        return None
    return () if labels == [NO_RISK] else tuple(labels)


def _problem(section: Section, kind: ProblemKind, message: str | None = None) -> SpecProblem:
    if message is None:
        wanted = _WANTED[section]
        message = {
            ProblemKind.MISSING: f"the section is missing: add a `### {section}` heading, then {wanted}.",
            ProblemKind.DUPLICATE: "the section appears more than once: keep a single one.",
            ProblemKind.EMPTY: f"the section is empty: write {wanted}.",
            ProblemKind.HINT: f"the section still holds the template's hint: replace it with {wanted}.",
            ProblemKind.NO_SUCCESS_METRIC: f"no success metric found: give {wanted}.",
        }[kind]
    return SpecProblem(section, kind, message)


def _unlist(line: str) -> str:
    """A line without its list marker, on one line."""
    match = LIST_ITEM.match(line)
    return collapse(line[match.end() :] if match else line)


def _quote(value: str) -> str:
    """Author's text shown in a comment: one short line in a code span (no mention or link is rendered)."""
    return quote(value, 40)
