"""Plans: the markdown and JSON forms, their validation, and the DAG helpers (docs/plans.md)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from facteur.domain.plans import (
    KEY_PATTERN,
    NOT_PROVIDED,
    PLAN_SECTIONS,
    READY_CHECKLIST,
    InvalidPlan,
    Plan,
    PlanTask,
    find_cycles,
    parse_plan,
    plan_from_json,
    plan_problems,
    plan_to_json,
    ready_keys,
    render_plan,
    topological_order,
)
from facteur.domain.prompts import TASK_FORMAT_HELP, plan_template
from facteur.domain.untrusted import PLAN_MARKER
from facteur.errors import InvalidInput
from tests.support.services import REPO_ROOT

EM = "\u2014"
EN = "\u2013"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: whole plans are costly to generate: fewer of them keep the file at a few seconds
WHOLE_PLANS = settings(PROPERTY, max_examples=100)

# --- strategies ---------------------------------------------------------------------------------------------

#: one line of any text but line breaks (and surrogates, which no markdown holds)
ANY_LINE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), max_size=20)
#: lines that are plain markdown anywhere
MARKDOWN_LINES = st.sampled_from(
    [
        "- an item",
        "* [ ] a box",
        "+ [x] a ticked box",
        "1. first",
        "> a quote",
        "**bold** and _italic_ and `code`",
        "| a | b |",
        "##### A small heading",
        "### Notes",
        "# Title",
        "Caf\u00e9 \u2014 na\u00efve \u4e2d\u6587 \U0001f680",
        "  indented",
        "    indented code",
        "trailing spaces  ",
        "\t",
        "<!-- codex:progress -->",
        "#1 is an issue, C# a language",
    ]
)
#: lines that are plan structure: they may only appear inside a code block
STRUCTURE_LINES = st.sampled_from(
    [
        "### Objective",
        "## Deliverables",
        "#### fake-task \u2014 Not a task",
        "- Depends on: nothing",
        "- Heavy: yes",
        "Acceptance criteria:",
        PLAN_MARKER,
    ]
)


@st.composite
def code_blocks(draw: st.DrawFn) -> str:
    fence = draw(st.sampled_from(["```", "~~~", "````python"]))
    body = draw(st.lists(st.one_of(STRUCTURE_LINES, MARKDOWN_LINES, ANY_LINE), max_size=3))
    closing = fence.rstrip("python")
    return "\n".join((fence, *body, closing))


@st.composite
def texts(draw: st.DrawFn, *, min_blocks: int = 0) -> str:
    blocks = draw(
        st.lists(
            st.one_of(
                st.lists(st.one_of(ANY_LINE, MARKDOWN_LINES), min_size=1, max_size=2).map("\n".join),
                code_blocks(),
            ),
            min_size=min_blocks,
            max_size=2,
        )
    )
    return "\n\n".join(blocks)


ONE_LINE = ANY_LINE.map(lambda text: text.strip(" \t")).filter(bool)
KEYS = st.from_regex(KEY_PATTERN, fullmatch=True).filter(lambda key: key != "none")
PATH_PARTS = st.sampled_from(
    ["src", "facteur", "a b", "caf\u00e9.py", "\u6587\u4ef6", ".github", "x-y_z.md", "v1.2"]
)
PATHS = st.builds(
    lambda parts, directory: "/".join(parts) + ("/" if directory else ""),
    st.lists(PATH_PARTS, min_size=1, max_size=3),
    st.booleans(),
)


@st.composite
def tasks_in_dependency_order(
    draw: st.DrawFn, *, min_size: int = 1, max_size: int = 5, text: bool = True
) -> list[PlanTask]:
    """Tasks whose dependencies all come earlier in the list (so the graph is a DAG); with random text,
    or with short fixed text when only the graph matters."""
    keys = draw(st.lists(KEYS, min_size=min_size, max_size=max_size, unique=True))
    tasks = []
    for index, key in enumerate(keys):
        earlier = keys[:index]
        depends_on = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        if not text:
            tasks.append(task(key, depends_on=tuple(depends_on)))
            continue
        tasks.append(
            PlanTask(
                key=key,
                title=draw(ONE_LINE),
                description=draw(texts()),
                depends_on=tuple(depends_on),
                acceptance_criteria=tuple(draw(st.lists(ONE_LINE, min_size=1, max_size=2))),
                paths=tuple(draw(st.lists(PATHS, max_size=2))),
                heavy=draw(st.booleans()),
            )
        )
    return tasks


@st.composite
def valid_plans(draw: st.DrawFn) -> Plan:
    ordered = draw(tasks_in_dependency_order())
    tasks = draw(st.permutations(ordered))
    sections = {name: draw(texts(min_blocks=0 if name == "Task Breakdown" else 1)) for name in PLAN_SECTIONS}
    plan = Plan(sections=sections, tasks=tuple(tasks))
    assume(not plan_problems(plan))
    return plan


def sloppy_render(plan: Plan, data: st.DataObject) -> str:
    """The plan as a person might write it: every leniency the parser allows, chosen at random."""
    lines = [data.draw(st.sampled_from(["", "Here is the plan.\n"])) + PLAN_MARKER]
    for name in PLAN_SECTIONS:
        heading = data.draw(
            st.sampled_from(
                [
                    f"### {name}",
                    f"## {name.lower()}",
                    f"### **{name}**",
                    f"### {name.upper()}:",
                    f"### {name.replace('&', 'and')} ###",
                ]
            )
        )
        lines.extend(("", heading, "\n" * data.draw(st.integers(0, 2)) + plan.sections[name]))
        if name == "Task Breakdown":
            for task in plan.tasks:
                lines.extend(("", *sloppy_task(task, data)))
    return "\n".join(lines)


def sloppy_task(task: PlanTask, data: st.DataObject) -> list[str]:
    separator = data.draw(st.sampled_from([f" {EM} ", f" {EN} ", f"{EM}", " - ", ": ", ":"]))
    key = data.draw(st.sampled_from([task.key, f"`{task.key}`", f"**{task.key}**"]))
    lines = [f"#### {key}{separator}{task.title}", ""]
    if task.description:
        lines.extend((task.description, "\n" * data.draw(st.integers(0, 2))))

    def bullet(name: str, value: str) -> str:
        mark = data.draw(st.sampled_from("-*+"))
        label = data.draw(st.sampled_from([name, name.lower(), name.upper(), f"**{name}:**", f"**{name}**:"]))
        return f"{mark} {label}{'' if ':' in label else ':'} {value}"

    fields: list[list[str]] = []
    keys = (
        ", ".join(task.depends_on)
        if data.draw(st.booleans())
        else " ".join(f"`{k}`" for k in task.depends_on)
    )
    written = data.draw(st.booleans())
    if task.depends_on or written:
        name = data.draw(st.sampled_from(["Depends on", "Dependencies", "depends"]))
        fields.append([bullet(name, keys or data.draw(st.sampled_from(["none", "None", "-", "n/a"])))])
    written = data.draw(st.booleans())
    if task.paths or written:
        name = data.draw(st.sampled_from(["Paths", "Files", "path"]))
        fields.append([bullet(name, ", ".join(task.paths) or "none")])
    if task.heavy or data.draw(st.booleans()):
        words = ["yes", "Yes", "true", "y"] if task.heavy else ["no", "No", "false"]
        fields.append([bullet("Heavy", data.draw(st.sampled_from(words)))])
    header = data.draw(
        st.sampled_from(
            ["Acceptance criteria:", "**Acceptance criteria:**", "##### Acceptance Criteria", "-"]
        )
    )
    first, *rest = task.acceptance_criteria
    if header == "-" and plain(first):
        criteria = [f"- Acceptance criteria: {first}"]
    else:
        criteria = ["Acceptance criteria:" if header == "-" else header, f"- [ ] {first}"]
    for criterion in rest:
        marks = ["- [ ] ", "- [x] ", "* ", "1. ", "- "] if plain(criterion) else ["- [ ] ", "* [X] "]
        mark = data.draw(st.sampled_from(marks))
        criteria.extend(["\n" * data.draw(st.integers(0, 1)) + mark + criterion])
    fields.append(criteria)
    for block in data.draw(st.permutations(fields)):
        lines.extend((*block, "\n" * data.draw(st.integers(0, 1))))
    return lines


def plain(criterion: str) -> bool:
    """Whether a criterion reads the same without a checkbox before it: without one, ``Paths: x`` would be
    a field, ``Acceptance criteria`` a header, and ``[x] done`` a ticked ``done``."""
    return ":" not in criterion and "acceptance" not in criterion.lower() and not criterion.startswith("[")


# --- round trips --------------------------------------------------------------------------------------------


@WHOLE_PLANS
@given(valid_plans())
def test_render_then_parse_gives_the_plan_back(plan: Plan) -> None:
    text = render_plan(plan)
    assert parse_plan(text) == plan
    assert render_plan(parse_plan(text)) == text
    assert plan_from_json(plan_to_json(plan)) == plan


@WHOLE_PLANS
@given(valid_plans(), st.data())
def test_every_leniency_reads_as_the_canonical_plan(plan: Plan, data: st.DataObject) -> None:
    sloppy = sloppy_render(plan, data)
    assert parse_plan(sloppy) == plan
    normalised = render_plan(parse_plan(sloppy))
    assert render_plan(parse_plan(normalised)) == normalised


# --- the DAG ------------------------------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_topological_order_respects_every_edge_and_plan_order(data: st.DataObject) -> None:
    tasks = data.draw(st.permutations(data.draw(tasks_in_dependency_order(max_size=12, text=False))))
    order = topological_order(tasks)
    assert sorted(task.key for task in order) == sorted(task.key for task in tasks)
    position = {task.key: index for index, task in enumerate(order)}
    for task in tasks:
        for key in task.depends_on:
            assert position[key] < position[task.key]
    for index, task in enumerate(order):
        # stable: each task is the earliest in plan order among those ready at that point
        assert ready_keys(tasks, {done.key for done in order[:index]})[0] == task.key


@PROPERTY
@given(st.data())
def test_an_injected_cycle_is_named_with_edges_that_exist(data: st.DataObject) -> None:
    ordered = data.draw(tasks_in_dependency_order(min_size=2, max_size=12, text=False))
    low = data.draw(st.integers(0, len(ordered) - 2))
    high = data.draw(st.integers(low + 1, len(ordered) - 1))
    early, late = ordered[low], ordered[high]
    # late depends on early (added if absent) and early now depends on late: a cycle
    ordered[high] = PlanTask(**{**plan_to_json_task(late), "depends_on": (*late.depends_on, early.key)})
    if early.key in late.depends_on:
        ordered[high] = late
    ordered[low] = PlanTask(**{**plan_to_json_task(early), "depends_on": (*early.depends_on, late.key)})
    tasks = data.draw(st.permutations(ordered))
    edges = {(task.key, key) for task in tasks for key in task.depends_on}
    plan = Plan(sections=dict.fromkeys(PLAN_SECTIONS, "Text."), tasks=tuple(tasks))
    with pytest.raises(InvalidPlan) as raised:
        parse_plan(render_plan(plan))
    named = [problem for problem in raised.value.problems if problem.startswith("dependency cycle:")]
    assert named
    for problem in named:
        keys = re.findall(r"`([^`]+)`", problem.split(" (")[0])
        assert keys[0] == keys[-1]
        assert len(set(keys[:-1])) == len(keys) - 1
        assert all(edge in edges for edge in itertools.pairwise(keys))
    cycles = find_cycles(tasks)
    assert [re.findall(r"`([^`]+)`", problem.split(" (")[0])[:-1] for problem in named] == [
        list(cycle) for cycle in cycles
    ]
    for cycle in cycles:
        assert all(edge in edges for edge in zip(cycle, (*cycle[1:], cycle[0]), strict=True))
    with pytest.raises(InvalidPlan):
        topological_order(tasks)


def plan_to_json_task(task: PlanTask) -> dict[str, Any]:
    return {
        "key": task.key,
        "title": task.title,
        "description": task.description,
        "depends_on": task.depends_on,
        "acceptance_criteria": task.acceptance_criteria,
        "paths": task.paths,
        "heavy": task.heavy,
    }


def test_ready_keys() -> None:
    tasks = [
        task("a"),
        task("b", depends_on=("a",)),
        task("c"),
        task("d", depends_on=("b", "c")),
    ]
    assert ready_keys(tasks, set()) == ("a", "c")
    assert ready_keys(tasks, {"a"}) == ("b", "c")
    assert ready_keys(tasks, {"a", "b", "c"}) == ("d",)
    assert ready_keys(tasks, {"a", "b", "c", "d"}) == ()


def test_topological_order_is_stable_and_refuses_a_cycle() -> None:
    tasks = [task("late", depends_on=("base",)), task("base"), task("other")]
    assert [t.key for t in topological_order(tasks)] == ["base", "late", "other"]
    with pytest.raises(InvalidPlan, match="dependency cycle"):
        topological_order([task("a", depends_on=("b",)), task("b", depends_on=("a",))])
    with pytest.raises(InvalidPlan, match="not a task of this plan"):
        topological_order([task("a", depends_on=("zz",))])


# --- example plans ------------------------------------------------------------------------------------------


def task(key: str, **fields: Any) -> PlanTask:
    values: dict[str, Any] = {"title": f"Do {key}", "acceptance_criteria": (f"{key} is done",)} | fields
    return PlanTask(key=key, **values)


def plan_text(breakdown: str, *, skip: tuple[str, ...] = (), marker: bool = True) -> str:
    lines = [PLAN_MARKER] if marker else []
    for name in PLAN_SECTIONS:
        if name in skip:
            continue
        lines.extend((f"### {name}", breakdown if name == "Task Breakdown" else f"About {name.lower()}."))
    return "\n".join(lines)


TWO_TASKS = f"""\
#### a {EM} First
Do the first thing.
- Depends on: none
Acceptance criteria:
- [ ] first is done

#### b {EM} Second
- Depends on: a
Acceptance criteria:
- [ ] second is done
"""


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(InvalidPlan) as raised:
        parse_plan(text)
    assert isinstance(raised.value, InvalidInput)
    return raised.value.problems


def test_a_valid_plan() -> None:
    plan = parse_plan(plan_text(TWO_TASKS))
    assert list(plan.sections) == list(PLAN_SECTIONS)
    assert plan.sections["Objective"] == "About objective."
    assert plan.sections["Task Breakdown"] == ""
    assert plan.keys == ("a", "b")
    assert plan.task("a") == PlanTask(
        key="a", title="First", description="Do the first thing.", acceptance_criteria=("first is done",)
    )
    assert plan.task("b").depends_on == ("a",)
    with pytest.raises(KeyError):
        plan.task("c")
    assert plan_problems(plan) == ()


def test_missing_marker_and_sections_are_named() -> None:
    found = problems(plan_text(TWO_TASKS, skip=("Deliverables", "Ready Checklist"), marker=False))
    assert found == (
        f"the plan marker line `{PLAN_MARKER}` is missing: put it alone on the plan's first line",
        "section `### Deliverables` is missing",
        "section `### Ready Checklist` is missing",
    )


def test_no_tasks() -> None:
    [problem] = problems(plan_text("Nothing to do."))
    assert problem.startswith("the plan has no tasks")


def test_unknown_dependency_names_the_task_and_the_key() -> None:
    text = plan_text(TWO_TASKS.replace("- Depends on: a", "- Depends on: a, ghost"))
    assert problems(text) == ("task `b` depends on `ghost`, which is not a task of this plan",)


def test_a_cycle_is_named_in_order() -> None:
    breakdown = "\n".join(
        f"#### {key} {EM} T\n- Depends on: {dep}\nAcceptance criteria:\n- ok"
        for key, dep in (("x", "none"), ("a", "c"), ("b", "a"), ("c", "b, x"))
    )
    [problem] = problems(plan_text(breakdown))
    assert problem.startswith("dependency cycle: `a` \u2192 `c` \u2192 `b` \u2192 `a` (each task depends")


def test_two_separate_cycles_are_both_named() -> None:
    tasks = [
        task("a", depends_on=("b",)),
        task("b", depends_on=("a",)),
        task("c", depends_on=("d",)),
        task("d", depends_on=("c",)),
    ]
    assert find_cycles(tasks) == (("a", "b"), ("c", "d"))


def test_duplicate_keys() -> None:
    breakdown = TWO_TASKS + f"#### a {EM} Again\nAcceptance criteria:\n- again\n"
    assert problems(plan_text(breakdown)) == (
        "duplicate key `a`: tasks 1 and 3 both use it; each task needs its own key",
    )


def test_a_task_without_acceptance_criteria() -> None:
    text = plan_text(TWO_TASKS.replace("Acceptance criteria:\n- [ ] second is done", ""))
    assert problems(text) == (
        "task `b` has no acceptance criteria: add `Acceptance criteria:` followed by a `- [ ] ...` list",
    )
    # a header with an empty list is no better
    text = plan_text(TWO_TASKS.replace("- [ ] second is done", "- [ ]"))
    assert len(problems(text)) == 1


def test_self_dependency() -> None:
    text = plan_text(TWO_TASKS.replace("- Depends on: a", "- Depends on: a, b"))
    assert problems(text) == ("task `b` depends on itself: remove `b` from its dependencies",)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        (f"#### Step-1 {EM} Set up", "task `Step-1`: `Step-1` is not a valid key"),
        (f"#### -lead {EM} Set up", "task `-lead`: `-lead` is not a valid key"),
        (f"#### {'k' * 64} {EM} Long", f"`{'k' * 59}\u2026` is not a valid key"),
        (f"#### none {EM} Reserved", "task `none`: `none` cannot be a key"),
        ("#### Set up the database", "task 1 (`Set up the database`) has no key"),
        (f"#### setup {EM}", "task `setup` has no title"),
    ],
)
def test_bad_task_headings(heading: str, expected: str) -> None:
    found = problems(plan_text(f"{heading}\nAcceptance criteria:\n- done"))
    assert any(expected in problem for problem in found), found


def test_a_title_markdown_would_cut_is_refused() -> None:
    plan = Plan(sections=dict.fromkeys(PLAN_SECTIONS, "Text."), tasks=(task("a", title="Fix #"),))
    assert plan_problems(plan) == (
        "task `a`: the title cannot end with `#` after a space (markdown would drop it)",
    )
    # as markdown, the same heading is read the way GitHub shows it
    assert parse_plan(render_plan(plan)).task("a").title == "Fix"


def test_every_problem_is_reported_at_once() -> None:
    breakdown = f"""\
#### Bad Key {EM} One
- Heavy: maybe
- Heavy: no
#### b {EM} Two
- Depends on: b, zz
#### b {EM} Three
- Paths: /etc/passwd, ../up
Acceptance criteria:
- fine
"""
    found = problems(plan_text(breakdown, skip=("Objective",), marker=False))
    assert found == (
        f"the plan marker line `{PLAN_MARKER}` is missing: put it alone on the plan's first line",
        "section `### Objective` is missing",
        "task `Bad Key`: `Heavy` is given more than once: keep one (the first was read)",
        "task `Bad Key`: `Heavy` is `maybe`: write `yes` or `no`",
        "task `Bad Key`: `Bad Key` is not a valid key: use 1 to 63 lower-case letters, digits, `-` and `_`, "
        "starting with a letter or a digit",
        "task `Bad Key` has no acceptance criteria: add `Acceptance criteria:` followed by a "
        "`- [ ] ...` list",
        "task `b` depends on itself: remove `b` from its dependencies",
        "task `b` has no acceptance criteria: add `Acceptance criteria:` followed by a `- [ ] ...` list",
        "task `b`: path `/etc/passwd` must be relative to the repository root, without `..`",
        "task `b`: path `../up` must be relative to the repository root, without `..`",
        "duplicate key `b`: tasks 2 and 3 both use it; each task needs its own key",
        "task `b` depends on `zz`, which is not a task of this plan",
    )


def test_empty_and_repeated_sections() -> None:
    text = plan_text(TWO_TASKS).replace("About objective.", "") + "\n### objective\nAgain."
    assert problems(text) == (
        "section `### Objective` appears more than once: keep one (the first one was read)",
        "section `### Objective` is empty",
    )


def test_lenient_forms() -> None:
    text = f"""\
Some words before the plan.

{PLAN_MARKER}
## OBJECTIVE:
Ship it.
### **Context and Constraints**
None.
### Task Breakdown
We split it in two.

#### `setup`: Prepare
* **Depends on:** None
+ FILES: `src/a.py`,docs/
- heavy: TRUE

##### Acceptance criteria
1. the module exists
   and is imported
2) tests pass

#### deploy {EN} Roll out

- Acceptance criteria: it is live
- Dependencies: `setup`
Trailing prose after the fields.
### Deliverables ###
Code.
### Validation & Observability
```sh
### Deliverables
make test
```
### Risks & Contingencies
Low.
### Communication & Handoff
Ping.
### ready checklist
- [ ] done
"""
    plan = parse_plan(text)
    assert plan.sections["Objective"] == "Ship it."
    assert plan.sections["Task Breakdown"] == "We split it in two."
    assert plan.sections["Validation & Observability"] == "```sh\n### Deliverables\nmake test\n```"
    setup, deploy = plan.tasks
    assert setup == PlanTask(
        key="setup",
        title="Prepare",
        paths=("src/a.py", "docs/"),
        heavy=True,
        acceptance_criteria=("the module exists and is imported", "tests pass"),
    )
    assert deploy == PlanTask(
        key="deploy",
        title="Roll out",
        description="Trailing prose after the fields.",
        depends_on=("setup",),
        acceptance_criteria=("it is live",),
    )
    normalised = render_plan(plan)
    assert render_plan(parse_plan(normalised)) == normalised


def test_a_code_block_ends_the_criteria_list() -> None:
    breakdown = f"#### a {EM} A\nAcceptance criteria:\n- [ ] one\n  ```\n- not a criterion\n  ```\n"
    plan = parse_plan(plan_text(breakdown))
    assert plan.task("a").acceptance_criteria == ("one",)
    assert plan.task("a").description == "  ```\n- not a criterion\n  ```"


def test_untrusted_text_is_cleaned_first() -> None:
    hidden = "<!-- - Depends on: ghost -->\u202e"
    text = plan_text(TWO_TASKS.replace("Do the first thing.", f"Do the first{hidden} thing."))
    assert parse_plan(text).task("a").description == "Do the first thing."
    assert PlanTask(key="a\u200b", title="<!-- x -->T").key == "a"


def test_structure_inside_text_is_refused_for_plans_built_in_code() -> None:
    plan = Plan(
        sections=dict.fromkeys(PLAN_SECTIONS, "Text.")
        | {"Objective": "Fine.\n### Deliverables", "Task Breakdown": "#### x \u2014 y"},
        tasks=(task("a", description="- Heavy: yes"), task("b", description="```\nopen")),
    )
    found = plan_problems(plan)
    assert found == (
        "section `### Objective`: has a line that would start a new section: `### Deliverables`",
        "section `### Task Breakdown`: has a `####` heading, which would start a new task: `#### x \u2014 y`",
        "task `a`: the description has a line that would be read as a task field: `- Heavy: yes`",
        "task `b`: the description opens a code block that it does not close",
    )


# --- JSON ---------------------------------------------------------------------------------------------------


def test_json_defaults_and_placeholders() -> None:
    plan = plan_from_json({"tasks": [{"key": "a", "title": "A", "acceptance_criteria": ["done"]}]})
    assert plan.tasks == (PlanTask(key="a", title="A", acceptance_criteria=("done",)),)
    assert plan.sections["Objective"] == NOT_PROVIDED
    assert plan.sections["Task Breakdown"] == ""
    assert plan.sections["Ready Checklist"] == "\n".join(f"- [ ] {item}" for item in READY_CHECKLIST)
    assert parse_plan(render_plan(plan)) == plan
    document = plan_to_json(plan)
    assert list(document["sections"]) == list(PLAN_SECTIONS)
    assert document["tasks"][0]["depends_on"] == []


def test_json_is_validated_like_markdown() -> None:
    document: dict[str, Any] = {
        "sections": {"objective": "Go.", "Objective": "Again.", "Notes": "x", "Deliverables": 3},
        "tasks": [
            {"key": "a", "title": "A", "depends_on": ["a"], "acceptance_criteria": ["ok"], "heavy": "yes"},
            {"key": "b", "title": "B", "depends_on": "a", "extra": 1},
            "not an object",
        ],
        "version": 2,
    }
    with pytest.raises(InvalidPlan) as raised:
        plan_from_json(document)
    assert raised.value.problems == (
        "unknown field `version`: a plan has `sections` and `tasks`",
        "section `Objective` is given more than once",
        "unknown section `Notes`: the sections are " + ", ".join(f"`{name}`" for name in PLAN_SECTIONS),
        "section `Deliverables` must be a string of markdown",
        "section `### Deliverables` is empty",
        "task 1: `heavy` must be true or false",
        "task `a` depends on itself: remove `a` from its dependencies",
        "task 2: unknown field `extra`: a task has `key`, `title`, `description`, `depends_on`, "
        "`acceptance_criteria`, `paths`, `heavy`",
        "task 2: `depends_on` must be a list of strings",
        "task `b` has no acceptance criteria: add `Acceptance criteria:` followed by a `- [ ] ...` list",
        "task 3 must be an object",
    )
    with pytest.raises(InvalidPlan, match="JSON object"):
        plan_from_json([])
    with pytest.raises(InvalidPlan, match="`tasks` must be a list"):
        plan_from_json({"sections": []})


# --- the documented and prompted formats --------------------------------------------------------------------


def test_the_example_in_the_docs_parses() -> None:
    doc = (REPO_ROOT / "docs" / "plans.md").read_text()
    [example] = re.findall(r"^````markdown\n(.*?)^````$", doc, flags=re.MULTILINE | re.DOTALL)
    plan = parse_plan(example)
    assert plan.keys == ("search-cache", "cache-metrics")
    assert plan.task("cache-metrics").depends_on == ("search-cache",)
    assert len(plan.task("search-cache").acceptance_criteria) == 3
    assert render_plan(plan) == example


def test_the_example_in_the_planning_prompt_parses() -> None:
    [example] = re.findall(r"^```markdown\n(.*?)^```$", TASK_FORMAT_HELP, flags=re.MULTILINE | re.DOTALL)
    prerequisite = f"#### search-index {EM} Index\nAcceptance criteria:\n- indexed\n\n"
    template = plan_template().replace("### Task Breakdown", f"### Task Breakdown\n{prerequisite}{example}")
    filled = "\n".join(
        f"{line}\nSomething." if line.startswith("### ") and "Task" not in line else line
        for line in template.split("\n")
    )
    plan = parse_plan(filled)
    assert plan.keys == ("search-index", "search-cache")
    assert plan.task("search-cache").paths == ("src/search/cache.py", "tests/search/test_cache.py")


def test_stage_names_are_reserved_keys() -> None:
    document = {"tasks": [{"key": "planning", "title": "Plan", "acceptance_criteria": ["done"]}]}
    with pytest.raises(InvalidPlan) as caught:
        plan_from_json(document)
    assert any("`planning` is reserved" in problem for problem in caught.value.problems)
