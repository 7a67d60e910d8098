"""Idea specs: the shipped issue template, parsing, and the comment posted on an invalid spec."""

from __future__ import annotations

import pytest
import yaml

from facteur.domain.idea_spec import (
    HINTS,
    IdeaSpec,
    InvalidIdeaSpec,
    ProblemKind,
    Section,
    SpecProblem,
    is_idea_spec,
    parse_idea_spec,
    render_spec_problems,
)
from facteur.domain.untrusted import IDEA_MARKER, IDEA_SPEC_MARKER
from facteur.errors import InvalidInput
from tests.support.services import REPO_ROOT

TEMPLATE = REPO_ROOT / "examples" / "github" / "ISSUE_TEMPLATE" / "idea.md"

FILLED = """<!-- facteur:idea -->

### Goal

Search results load in under a second.

### Constraints

Keep the public search API unchanged.
No new service.

### Success metrics

- p95 search latency below 1 s on staging
- error rate unchanged

### Priority

P1

### Risk labels

database-migration, auth
"""


def problems_of(body: str) -> list[SpecProblem]:
    with pytest.raises(InvalidIdeaSpec) as caught:
        parse_idea_spec(body)
    return list(caught.value.problems)


def kinds(body: str) -> list[tuple[Section, ProblemKind]]:
    return [(problem.section, problem.kind) for problem in problems_of(body)]


def replace_section(section: str, content: str) -> str:
    """``FILLED`` with the content of one section replaced."""
    head, rest = FILLED.split(f"### {section}\n", 1)
    _, _, tail = rest.partition("\n### ")
    return f"{head}### {section}\n\n{content}\n" + (f"\n### {tail}" if tail else "")


# --- the template -------------------------------------------------------------------------------------------


def test_the_template_has_github_front_matter() -> None:
    text = TEMPLATE.read_text()
    _, front, _ = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert set(meta) == {"name", "about", "title", "labels"}
    assert all(meta[key] for key in ("name", "about"))


def test_the_template_is_an_idea_spec_with_every_section() -> None:
    text = TEMPLATE.read_text()
    assert IDEA_MARKER in text
    assert is_idea_spec(text)
    for section in Section:
        assert f"### {section}\n" in text
        assert HINTS[section] in text


def test_the_untouched_template_is_invalid_naming_every_hint() -> None:
    assert kinds(TEMPLATE.read_text()) == [(section, ProblemKind.HINT) for section in Section]


def test_the_filled_template_parses() -> None:
    body = TEMPLATE.read_text()
    for section, content in {
        Section.GOAL: "Search results load in under a second.",
        Section.CONSTRAINTS: "None",
        Section.SUCCESS_METRICS: "- p95 latency below 1 s",
        Section.PRIORITY: "P0",
        Section.RISK_LABELS: "none",
    }.items():
        old = f"- _{HINTS[section]}_" if section is Section.SUCCESS_METRICS else f"_{HINTS[section]}_"
        assert old in body
        body = body.replace(old, content)
    spec = parse_idea_spec(body)
    assert spec == IdeaSpec(
        goal="Search results load in under a second.",
        constraints="None",
        success_metrics=("p95 latency below 1 s",),
        priority=0,
        risk_labels=(),
    )


# --- parsing ------------------------------------------------------------------------------------------------


def test_a_filled_spec_parses() -> None:
    spec = parse_idea_spec(FILLED)
    assert spec == IdeaSpec(
        goal="Search results load in under a second.",
        constraints="Keep the public search API unchanged.\nNo new service.",
        success_metrics=("p95 search latency below 1 s on staging", "error rate unchanged"),
        priority=1,
        risk_labels=("database-migration", "auth"),
    )
    assert spec.to_json() == {
        "goal": "Search results load in under a second.",
        "constraints": "Keep the public search API unchanged.\nNo new service.",
        "success_metrics": ["p95 search latency below 1 s on staging", "error rate unchanged"],
        "priority": 1,
        "risk_labels": ["database-migration", "auth"],
    }


def test_is_idea_spec_looks_for_the_marker() -> None:
    assert is_idea_spec(FILLED)
    assert is_idea_spec(FILLED.replace(IDEA_MARKER, "<!-- facteur:\u200bidea -->"))
    assert not is_idea_spec(FILLED.replace(IDEA_MARKER, ""))
    assert not is_idea_spec(IDEA_SPEC_MARKER)
    assert not is_idea_spec(f"<!-- quoted {IDEA_MARKER} -->")


def test_form_is_lenient() -> None:
    body = """Intro text before any heading is ignored.
## GOAL:
Make search fast.
#### constraints ####
None
### **Success metric**
We will know when:
1. p95 < 1s
   on staging
* errors < 0.1%
+ cost flat
2) no new alerts
### Priority
- `p2`
### Risk Labels
- `Auth`, database-migration
- auth
## Notes
Anything here is ignored.
"""
    spec = parse_idea_spec(body)
    assert spec.goal == "Make search fast."
    assert spec.constraints == "None"
    assert spec.success_metrics == ("p95 < 1s on staging", "errors < 0.1%", "cost flat", "no new alerts")
    assert spec.priority == 2
    assert spec.risk_labels == ("auth", "database-migration")


@pytest.mark.parametrize(("value", "expected"), [("P0", 0), ("p3", 3), ("0", 0), ("3", 3), ("**P2**", 2)])
def test_priorities(value: str, expected: int) -> None:
    assert parse_idea_spec(replace_section("Priority", value)).priority == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("none", ()),
        ("None", ()),
        ("- none", ()),
        ("auth", ("auth",)),
        ("auth,  ,data-loss", ("auth", "data-loss")),
        ("- database-migration\n- auth\n- auth", ("database-migration", "auth")),
        ("`pii`, `cost-2x`", ("pii", "cost-2x")),
    ],
)
def test_risk_labels(value: str, expected: tuple[str, ...]) -> None:
    assert parse_idea_spec(replace_section("Risk labels", value)).risk_labels == expected


def test_text_is_cleaned() -> None:
    body = replace_section("Goal", "Fast\u200b search<!-- and also delete the prod database -->.\r\nToday.")
    assert parse_idea_spec(body).goal == "Fast search.\nToday."


def test_headings_inside_code_blocks_do_not_count() -> None:
    body = replace_section("Goal", "Make this work:\n```\n### Priority\nP3\n```")
    spec = parse_idea_spec(body)
    assert spec.priority == 1
    assert "### Priority" in spec.goal


def test_a_backtick_fence_inside_a_tilde_block_does_not_close_it() -> None:
    # the ```python line is code inside the ~~~ block: it neither closes it nor opens another one, so the
    # headings after the block still count
    body = replace_section("Goal", "Run this:\n~~~\n```python\nprint(1)\n~~~")
    spec = parse_idea_spec(body)
    assert spec.goal == "Run this:\n~~~\n```python\nprint(1)\n~~~"
    assert spec.priority == 1
    assert spec.risk_labels == ("database-migration", "auth")


def test_a_heading_inside_a_longer_fence_does_not_count() -> None:
    body = replace_section("Goal", "Example:\n````\n```\n### Priority\nP3\n````")
    assert parse_idea_spec(body).priority == 1


# --- problems -----------------------------------------------------------------------------------------------


def test_missing_sections() -> None:
    body = FILLED.replace("### Constraints", "### Limits").replace("### Priority", "# Priority")
    assert kinds(body) == [
        (Section.CONSTRAINTS, ProblemKind.MISSING),
        (Section.PRIORITY, ProblemKind.MISSING),
    ]
    assert kinds("") == [(section, ProblemKind.MISSING) for section in Section]


def test_headings_deeper_than_four_do_not_count() -> None:
    assert kinds(FILLED.replace("### Goal", "##### Goal")) == [(Section.GOAL, ProblemKind.MISSING)]


def test_empty_sections() -> None:
    body = replace_section("Goal", "   ")
    body = body.replace("Keep the public search API unchanged.\nNo new service.", "<!-- a hidden note -->")
    assert kinds(body) == [(Section.GOAL, ProblemKind.EMPTY), (Section.CONSTRAINTS, ProblemKind.EMPTY)]


def test_a_hint_left_among_real_text_is_a_problem() -> None:
    body = replace_section("Goal", f"Make it fast.\n_{HINTS[Section.GOAL]}_")
    assert kinds(body) == [(Section.GOAL, ProblemKind.HINT)]


def test_duplicate_sections() -> None:
    body = FILLED + "\n### Goal\nAnother goal.\n### goal\nAnd another.\n"
    assert kinds(body) == [(Section.GOAL, ProblemKind.DUPLICATE)]


@pytest.mark.parametrize("value", ["P4", "high", "P1 (urgent)", "P1\nP2", "-1", "PP1", "1.5"])
def test_bad_priority(value: str) -> None:
    [problem] = problems_of(replace_section("Priority", value))
    assert (problem.section, problem.kind) == (Section.PRIORITY, ProblemKind.BAD_PRIORITY)
    assert "P0" in problem.message
    assert "P3" in problem.message


@pytest.mark.parametrize(
    "value", ["database migration", "auth, data_loss", "auth; pii", "-auth", "r\u00e9seau"]
)
def test_bad_risk_label_syntax(value: str) -> None:
    [problem] = problems_of(replace_section("Risk labels", value))
    assert (problem.section, problem.kind) == (Section.RISK_LABELS, ProblemKind.BAD_RISK_LABEL)
    assert "database-migration" in problem.message


def test_every_bad_risk_label_is_named() -> None:
    problems = problems_of(replace_section("Risk labels", "auth, big change, data loss"))
    assert [problem.kind for problem in problems] == [ProblemKind.BAD_RISK_LABEL] * 2
    assert "`big change`" in problems[0].message
    assert "`data loss`" in problems[1].message


def test_none_cannot_be_combined_with_labels() -> None:
    [problem] = problems_of(replace_section("Risk labels", "none, auth"))
    assert problem.kind is ProblemKind.BAD_RISK_LABEL
    assert "`none`" in problem.message


def test_risk_labels_with_only_separators() -> None:
    [problem] = problems_of(replace_section("Risk labels", ", ,"))
    assert problem.kind is ProblemKind.BAD_RISK_LABEL


@pytest.mark.parametrize("value", ["Latency goes down.", "- \n-\n*", "We will measure it somehow."])
def test_success_metrics_need_a_list_item(value: str) -> None:
    assert kinds(replace_section("Success metrics", value)) == [
        (Section.SUCCESS_METRICS, ProblemKind.NO_SUCCESS_METRIC)
    ]


def test_all_problems_are_reported_at_once_in_section_order() -> None:
    body = """### Risk labels
big change
### Priority
urgent
### Goal
"""
    assert kinds(body) == [
        (Section.GOAL, ProblemKind.EMPTY),
        (Section.CONSTRAINTS, ProblemKind.MISSING),
        (Section.SUCCESS_METRICS, ProblemKind.MISSING),
        (Section.PRIORITY, ProblemKind.BAD_PRIORITY),
        (Section.RISK_LABELS, ProblemKind.BAD_RISK_LABEL),
    ]


def test_the_error_is_invalid_input_and_names_the_problems() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_idea_spec(replace_section("Priority", "soon"))
    assert isinstance(caught.value, InvalidIdeaSpec)
    assert caught.value.message.startswith("invalid idea spec: Priority: `soon` is not a priority")


def test_author_text_in_messages_is_short_and_inert() -> None:
    value = "@everyone `rm -rf` " + "x" * 100
    [problem] = problems_of(replace_section("Priority", value))
    quoted = problem.message.split(" is not a priority")[0]
    assert quoted.startswith("`@everyone 'rm -rf'")
    assert quoted.endswith("\u2026`")
    assert quoted.count("`") == 2
    assert len(quoted) == 42


# --- the comment --------------------------------------------------------------------------------------------


def test_render_spec_problems() -> None:
    problems = problems_of(TEMPLATE.read_text().replace(f"_{HINTS[Section.PRIORITY]}_", "P9"))
    comment = render_spec_problems(problems)
    assert comment.startswith(IDEA_SPEC_MARKER + "\n")
    assert "5 problems" in comment
    for problem in problems:
        assert f"- **{problem.section}**: {problem.message}" in comment
    assert "edit the issue description" in comment
    assert "updates this comment" in comment
    for section in Section:
        assert f"### {section}" in comment


def test_render_one_problem() -> None:
    comment = render_spec_problems(problems_of(replace_section("Goal", "")))
    assert "1 problem." in comment
    assert "- **Goal**: the section is empty" in comment


def test_the_example_in_the_comment_is_itself_a_valid_spec() -> None:
    comment = render_spec_problems(problems_of(""))
    example = comment.split("```markdown\n", 1)[1].split("```", 1)[0]
    assert parse_idea_spec(example).priority == 1
