"""Plans: the sections of the seeds' plan template plus a task list Facteur can schedule.

A plan is markdown that starts with the plan marker line and holds the eight ``###`` sections of
:data:`PLAN_SECTIONS`. Its Task Breakdown holds one ``#### <key> \u2014 <title>``
sub-heading per task, each followed by a description, the bullet fields ``Depends on``, ``Paths`` and
``Heavy``, and an ``Acceptance criteria:`` list (docs/plans.md). The same plan can be written as JSON
(:func:`plan_from_json`).

Reading is lenient in form (field names in any case, ``-``/``*``/``+`` bullets, an em or en dash, a spaced
hyphen or a colon between key and title, bold labels, extra blank lines) and strict in content: every problem
found (no tasks, an unknown or circular dependency, a duplicate key, a task without acceptance criteria...)
is reported at once in :class:`InvalidPlan`. :func:`render_plan` writes the canonical form, and the two
round-trip: ``parse_plan(render_plan(plan)) == plan`` for every valid plan.

All text is untrusted: it goes through :func:`facteur.domain.untrusted.clean` before anything else.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from typing import Any

from facteur.domain.markdown import CLOSING, LIST_ITEM, Fences, atx_heading, heading_name, quote
from facteur.domain.stages import Stage
from facteur.domain.untrusted import PLAN_MARKER, clean, collapse
from facteur.errors import InvalidInput

#: the plan's sections, in order; each is a ``###`` heading after the plan marker line
PLAN_SECTIONS: tuple[str, ...] = (
    "Objective",
    "Context & Constraints",
    "Task Breakdown",
    "Deliverables",
    "Validation & Observability",
    "Risks & Contingencies",
    "Communication & Handoff",
    "Ready Checklist",
)
#: the unchecked items of the Ready Checklist section
READY_CHECKLIST: tuple[str, ...] = (
    "Dependencies clarified (feature flags, secrets, linked services)",
    "Test and validation environments reachable",
    "Approvals and reviewers identified",
    "Rollback or mitigation steps documented",
)
TASK_BREAKDOWN = "Task Breakdown"
READY_CHECKLIST_SECTION = "Ready Checklist"
#: a task key: 1 to 63 lower-case letters, digits, ``-`` and ``_``, starting with a letter or a digit
KEY_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
#: written for "no dependencies" and "no paths"; it is therefore not a key, nor a path
#: keys of the tasks an idea's stages create (``planning``, …): a plan task cannot take them
RESERVED_KEYS: frozenset[str] = frozenset(stage.value for stage in Stage)

NONE = "none"
#: the text of a prose section a JSON plan leaves out (the Ready Checklist gets the template's items instead)
NOT_PROVIDED = "_Not provided._"
#: the separator :func:`render_plan` writes between a task's key and its title
TITLE_SEPARATOR = " \u2014 "
CRITERIA_LABEL = "Acceptance criteria:"

_KEY = re.compile(KEY_PATTERN)
_TASK_HEADING = re.compile(r"^(?P<key>.+?)(?:[ \t]*[:\u2013\u2014]|[ \t]+-(?=[ \t]|$))[ \t]*(?P<title>.*)$")
#: a bullet field, its label in bold or not: ``- Paths: a``, ``- **Paths:** a``, ``- **Paths**: a``
_FIELD = re.compile(
    r"^ {0,3}[-*+][ \t]+(?P<bold>\*\*|__)?(?P<name>[A-Za-z][A-Za-z _-]*?)[ \t]*"
    r"(?(bold)(?:(?P=bold)[ \t]*:|:[ \t]*(?P=bold))|:)[ \t]*(?P<value>.*?)[ \t]*$"
)
_CRITERIA_HEADER = re.compile(
    r"^ {0,3}(?:#{5,6}[ \t]+|[-*+][ \t]+)?(?P<bold>\*\*|__)?acceptance[ \t]+criteria[ \t]*"
    r"(?(bold)(?:(?P=bold)[ \t]*:?|:[ \t]*(?P=bold))|:?)[ \t]*$",
    re.IGNORECASE,
)
_CHECKBOX = re.compile(r"^\[[ xX]\](?:[ \t]+|$)")
_DEPENDENCY_SPLIT = re.compile(r"[, \t]+")
_NO_DEPENDENCY = frozenset({NONE, "-", "\u2013", "\u2014", "n/a"})
_YES = frozenset({"yes", "y", "true"})
_NO = frozenset({"no", "n", "false"})
_SECTION_NAMES: dict[str, str] = {name.casefold(): name for name in PLAN_SECTIONS}
_JSON_TASK_FIELDS = ("key", "title", "description", "depends_on", "acceptance_criteria", "paths", "heavy")


class _Field(Enum):
    DEPENDS_ON = "Depends on"
    PATHS = "Paths"
    HEAVY = "Heavy"
    CRITERIA = "Acceptance criteria"


_FIELD_NAMES: dict[str, _Field] = {
    "depends on": _Field.DEPENDS_ON,
    "depends": _Field.DEPENDS_ON,
    "dependencies": _Field.DEPENDS_ON,
    "paths": _Field.PATHS,
    "path": _Field.PATHS,
    "files": _Field.PATHS,
    "heavy": _Field.HEAVY,
    "acceptance criteria": _Field.CRITERIA,
}


class InvalidPlan(InvalidInput):
    """The plan cannot be used."""

    def __init__(self, problems: Iterable[str]) -> None:
        #: every problem found, each a sentence naming what is wrong and where
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("invalid plan: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanTask:
    """One task of a plan: a node of the idea's DAG.

    Text is stored as the parser produces it: cleaned (:func:`untrusted.clean`), one-line fields without
    spaces or tabs at either end, the description without blank lines at either end.
    """

    key: str
    title: str
    description: str = ""
    #: keys of the tasks whose changes this one builds on
    depends_on: tuple[str, ...] = ()
    #: one line each; the task is done when all hold
    acceptance_criteria: tuple[str, ...] = ()
    #: repository-relative files and directories the task is expected to touch
    paths: tuple[str, ...] = ()
    #: the task needs a large executor (long build, big test suite)
    heavy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _one_line(self.key))
        object.__setattr__(self, "title", _one_line(self.title))
        object.__setattr__(self, "description", _block(self.description))
        for name in ("depends_on", "acceptance_criteria", "paths"):
            object.__setattr__(self, name, tuple(_one_line(item) for item in getattr(self, name)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A plan: its sections' markdown and its tasks, in plan order.

    ``sections`` maps each name of :data:`PLAN_SECTIONS` to its text, in that order; the Task Breakdown's
    text is what comes before its first task (often empty). Texts are cleaned, without blank lines at
    either end.
    """

    sections: Mapping[str, str]
    tasks: tuple[PlanTask, ...]

    def __post_init__(self) -> None:
        ordered = {name: _block(self.sections[name]) for name in PLAN_SECTIONS if name in self.sections}
        extra = {name: _block(text) for name, text in self.sections.items() if name not in ordered}
        object.__setattr__(self, "sections", ordered | extra)
        object.__setattr__(self, "tasks", tuple(self.tasks))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(task.key for task in self.tasks)

    def task(self, key: str) -> PlanTask:
        """The task with this key (:class:`KeyError` when there is none)."""
        for task in self.tasks:
            if task.key == key:
                return task
        raise KeyError(key)


def checklist(items: Iterable[str]) -> str:
    """``items`` as an unchecked markdown checklist, one ``- [ ] item`` line each (the Ready Checklist, a
    task's acceptance criteria)."""
    return "\n".join(f"- [ ] {item}" for item in items)


# --- markdown -----------------------------------------------------------------------------------------------


def parse_plan(markdown: str) -> Plan:
    """Read a plan written in markdown; raise :class:`InvalidPlan` listing every problem found.

    The plan starts after the first line holding only the plan marker; the sections are the ``##`` or
    ``###`` headings named after :data:`PLAN_SECTIONS` (in any case, ``and`` for ``&``); other headings
    belong to the section above them, and a heading inside a code block is not a heading.
    """
    lines = clean(markdown).split("\n")
    problems: list[str] = []
    start = next((index + 1 for index, line in enumerate(lines) if line.strip(" \t") == PLAN_MARKER), None)
    if start is None:
        problems.append(
            f"the plan marker line `{PLAN_MARKER}` is missing: put it alone on the plan's first line"
        )
        start = 0
    found: dict[str, list[str]] = {}
    duplicates: list[str] = []
    current: list[str] | None = None
    fences = Fences()
    for line in lines[start:]:
        name = None if fences.code(line) else _section_heading(line)
        if name is None:
            if current is not None:
                current.append(line)
        elif name in found:
            if name not in duplicates:
                duplicates.append(name)
            current = None
        else:
            current = found[name] = []
    problems.extend(
        f"section `### {name}` appears more than once: keep one (the first one was read)"
        for name in duplicates
    )
    sections = {name: "\n".join(text) for name, text in found.items()}
    tasks: list[PlanTask] = []
    read: dict[int, list[str]] = {}
    if TASK_BREAKDOWN in found:
        sections[TASK_BREAKDOWN], tasks = _read_tasks(found[TASK_BREAKDOWN], read)
    plan = Plan(sections=sections, tasks=tuple(tasks))
    problems.extend(_problems(plan, read))
    if problems:
        raise InvalidPlan(problems)
    return plan


def render_plan(plan: Plan) -> str:
    """The plan in canonical markdown: the marker line, then the sections in order, each task as
    ``#### <key> \u2014 <title>``, its description, its three fields and its acceptance criteria."""
    lines = [PLAN_MARKER]
    for name in PLAN_SECTIONS:
        lines.extend(("", f"### {name}"))
        text = plan.sections.get(name, "")
        if text:
            lines.extend(("", text))
        if name == TASK_BREAKDOWN:
            for task in plan.tasks:
                lines.extend(("", *_render_task(task)))
    return "\n".join(lines) + "\n"


def _render_task(task: PlanTask) -> list[str]:
    lines = [f"#### {task.key}{TITLE_SEPARATOR}{task.title}", ""]
    if task.description:
        lines.extend((task.description, ""))
    depends_on = ", ".join(f"`{key}`" for key in task.depends_on) or NONE
    paths = ", ".join(f"`{path}`" for path in task.paths) or NONE
    lines.extend(
        (
            f"- {_Field.DEPENDS_ON.value}: {depends_on}",
            f"- {_Field.PATHS.value}: {paths}",
            f"- {_Field.HEAVY.value}: {'yes' if task.heavy else 'no'}",
            "",
            CRITERIA_LABEL,
        )
    )
    if task.acceptance_criteria:
        lines.append(checklist(task.acceptance_criteria))
    return lines


def _read_tasks(lines: list[str], problems: dict[int, list[str]]) -> tuple[str, list[PlanTask]]:
    """The Task Breakdown's introduction and its tasks: every ``####`` heading starts a task. The problems
    found in reading task ``n`` go to ``problems[n]``."""
    intro: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    fences = Fences()
    for line in lines:
        heading = None if fences.code(line) else atx_heading(line)
        if heading is not None and heading[0] == 4:
            blocks.append((heading[1], []))
        else:
            (blocks[-1][1] if blocks else intro).append(line)
    tasks = [
        _read_task(number, heading, body, problems.setdefault(number, []))
        for number, (heading, body) in enumerate(blocks, 1)
    ]
    return "\n".join(intro), tasks


def _read_task(number: int, heading: str, lines: list[str], problems: list[str]) -> PlanTask:
    key, title = _split_heading(heading)
    who = _who(number, key)
    description: list[str] = []
    criteria: list[str] = []
    values: dict[_Field, str] = {}
    in_criteria = after_structure = False
    fences = Fences()
    for line in lines:
        code = fences.code(line)
        kind, value = (None, "") if code else _classify(line)
        listed = in_criteria and not code
        if kind is _Field.CRITERIA:
            in_criteria = after_structure = True
            if value:
                criteria.append(_criterion(value))
        elif kind is not None:
            if kind in values:
                problems.append(
                    f"{who}: `{kind.value}` is given more than once: keep one (the first was read)"
                )
            values.setdefault(kind, value)
            in_criteria, after_structure = False, True
        elif listed and (item := LIST_ITEM.match(line)):
            criteria.append(_criterion(line[item.end() :]))
        elif listed and not line.strip(" \t"):
            continue
        elif listed and criteria and line[:1] in (" ", "\t"):
            criteria[-1] = (criteria[-1] + " " + line.strip(" \t")).strip(" \t")
        else:
            if after_structure and description and description[-1].strip(" \t"):
                description.append("")
            in_criteria = after_structure = False
            description.append(line)
    return PlanTask(
        key=key,
        title=title,
        description="\n".join(description),
        depends_on=_dependencies(values.get(_Field.DEPENDS_ON, "")),
        acceptance_criteria=tuple(criterion for criterion in criteria if criterion),
        paths=_paths(values.get(_Field.PATHS, "")),
        heavy=_heavy(who, values.get(_Field.HEAVY), problems),
    )


def _split_heading(text: str) -> tuple[str, str]:
    """A task heading's key and title; a heading without a separator is a bare key if it is one word, a
    title otherwise."""
    match = _TASK_HEADING.match(text)
    if match is not None:
        return match.group("key").strip("`*").strip(" \t"), match.group("title")
    if text and not re.search(r"[ \t]", text):
        return text.strip("`*"), ""
    return "", text


def _classify(line: str) -> tuple[_Field | None, str]:
    """Which field a line (outside code) sets, and its value; ``(None, "")`` for any other line."""
    if _CRITERIA_HEADER.match(line):
        return _Field.CRITERIA, ""
    match = _FIELD.match(line)
    if match is None:
        return None, ""
    kind = _FIELD_NAMES.get(collapse(match.group("name").replace("-", " ").replace("_", " ")).lower())
    return (kind, match.group("value")) if kind is not None else (None, "")


def _criterion(text: str) -> str:
    return _CHECKBOX.sub("", text.strip(" \t")).strip(" \t")


def _dependencies(value: str) -> tuple[str, ...]:
    keys = [token.strip("`*") for token in _DEPENDENCY_SPLIT.split(value)]
    keys = [key for key in keys if key]
    return () if len(keys) == 1 and keys[0].lower() in _NO_DEPENDENCY else tuple(keys)


def _paths(value: str) -> tuple[str, ...]:
    paths = [part.strip(" \t").strip("`").strip(" \t") for part in value.split(",")]
    paths = [path for path in paths if path]
    return () if len(paths) == 1 and paths[0].lower() == NONE else tuple(paths)


def _heavy(who: str, value: str | None, problems: list[str]) -> bool:
    if value is None:
        return False
    answer = value.strip("*_` \t").lower()
    if answer in _YES or answer in _NO:
        return answer in _YES
    problems.append(f"{who}: `Heavy` is {_quote(value)}: write `yes` or `no`")
    return False


# --- JSON ---------------------------------------------------------------------------------------------------


def plan_from_json(document: object) -> Plan:
    """Read a plan from its JSON form (``{"sections": {...}, "tasks": [...]}``, ``sections`` optional);
    raise :class:`InvalidPlan` listing every problem found.

    A prose section left out gets :data:`NOT_PROVIDED` (the Ready Checklist gets the template's four
    unchecked items); the Task Breakdown's introduction defaults to nothing. The checks are those of
    :func:`parse_plan`, plus the JSON types.
    """
    if not isinstance(document, Mapping):
        raise InvalidPlan(["the plan must be a JSON object with a `tasks` list"])
    problems = [
        f"unknown field {_quote(str(name))}: a plan has `sections` and `tasks`"
        for name in document
        if name not in ("sections", "tasks")
    ]
    sections = _sections_from_json(document.get("sections", {}), problems)
    raw_tasks = document.get("tasks")
    tasks: list[PlanTask] = []
    read: dict[int, list[str]] = {}
    unreadable: set[int] = set()
    if not isinstance(raw_tasks, list):
        problems.append("`tasks` must be a list of task objects")
    else:
        tasks = [
            _task_from_json(number, raw, read.setdefault(number, []))
            for number, raw in enumerate(raw_tasks, 1)
        ]
        unreadable = {number for number, raw in enumerate(raw_tasks, 1) if not isinstance(raw, Mapping)}
    plan = Plan(sections=sections, tasks=tuple(tasks))
    problems.extend(_problems(plan, read, unreadable))
    if problems:
        raise InvalidPlan(problems)
    return plan


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan's JSON form: every section, then the tasks; :func:`plan_from_json` reads it back."""
    return {
        "sections": dict(plan.sections),
        "tasks": [
            {
                "key": task.key,
                "title": task.title,
                "description": task.description,
                "depends_on": list(task.depends_on),
                "acceptance_criteria": list(task.acceptance_criteria),
                "paths": list(task.paths),
                "heavy": task.heavy,
            }
            for task in plan.tasks
        ],
    }


def _sections_from_json(raw: object, problems: list[str]) -> dict[str, str]:
    sections: dict[str, str] = {}
    if not isinstance(raw, Mapping):
        problems.append("`sections` must be an object mapping section names to markdown text")
        raw = {}
    for name, text in raw.items():
        canonical = _section_name(name) if isinstance(name, str) else None
        if canonical is None:
            problems.append(f"unknown section {_quote(str(name))}: the sections are {_names(PLAN_SECTIONS)}")
        elif canonical in sections:
            problems.append(f"section `{canonical}` is given more than once")
        elif not isinstance(text, str):
            problems.append(f"section `{canonical}` must be a string of markdown")
            sections[canonical] = ""
        else:
            sections[canonical] = text
    for name in PLAN_SECTIONS:
        if name not in sections:
            sections[name] = _default_section(name)
    return sections


def _default_section(name: str) -> str:
    if name == TASK_BREAKDOWN:
        return ""
    if name == READY_CHECKLIST_SECTION:
        return checklist(READY_CHECKLIST)
    return NOT_PROVIDED


def _task_from_json(number: int, raw: object, problems: list[str]) -> PlanTask:
    if not isinstance(raw, Mapping):
        problems.append(f"task {number} must be an object")
        return PlanTask(key="", title="")
    who = f"task {number}"
    problems.extend(
        f"{who}: unknown field {_quote(str(name))}: a task has {_names(_JSON_TASK_FIELDS)}"
        for name in raw
        if name not in _JSON_TASK_FIELDS
    )

    def text(name: str) -> str:
        value = raw.get(name, "")
        if isinstance(value, str):
            return value
        problems.append(f"{who}: `{name}` must be a string")
        return ""

    def strings(name: str) -> tuple[str, ...]:
        value = raw.get(name, [])
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        problems.append(f"{who}: `{name}` must be a list of strings")
        return ()

    heavy = raw.get("heavy", False)
    if not isinstance(heavy, bool):
        problems.append(f"{who}: `heavy` must be true or false")
        heavy = False
    return PlanTask(
        key=text("key"),
        title=text("title"),
        description=text("description"),
        depends_on=strings("depends_on"),
        acceptance_criteria=strings("acceptance_criteria"),
        paths=strings("paths"),
        heavy=heavy,
    )


# --- validation ---------------------------------------------------------------------------------------------


def plan_problems(plan: Plan) -> tuple[str, ...]:
    """Every problem of a plan, in the order of the plan; empty for a valid plan.

    Both parsers end with these checks; a plan without problems renders to markdown that parses back to
    an equal plan.
    """
    return tuple(_problems(plan, {}))


def _problems(
    plan: Plan, read: Mapping[int, Sequence[str]], unreadable: AbstractSet[int] = frozenset()
) -> list[str]:
    """:func:`plan_problems`, with the problems a parser found in reading task ``n`` (``read[n]``) listed
    before that task's own; the tasks in ``unreadable`` (placeholders for input that was not a task at all)
    get no checks of their own."""
    problems: list[str] = []
    for name in PLAN_SECTIONS:
        text = plan.sections.get(name)
        if text is None:
            problems.append(f"section `### {name}` is missing")
        elif not text and name != TASK_BREAKDOWN:
            problems.append(f"section `### {name}` is empty")
        elif text and (trouble := _structure_trouble(text, tasks=name == TASK_BREAKDOWN)):
            problems.append(f"section `### {name}`: {trouble}")
    problems.extend(
        f"unknown section {_quote(name)}: the sections are {_names(PLAN_SECTIONS)}"
        for name in plan.sections
        if name not in PLAN_SECTIONS
    )
    if not plan.tasks and TASK_BREAKDOWN in plan.sections:
        problems.append(
            "the plan has no tasks: give each task a `#### <key> \u2014 <title>` heading under "
            "`### Task Breakdown`"
        )
    first: dict[str, int] = {}
    for number, task in enumerate(plan.tasks, 1):
        problems.extend(read.get(number, ()))
        if number not in unreadable:
            problems.extend(_task_problems(number, task))
        if task.key and task.key in first:
            problems.append(
                f"duplicate key {_quote(task.key)}: tasks {first[task.key]} and {number} both use it; "
                "each task needs its own key"
            )
        first.setdefault(task.key, number)
    problems.extend(_graph_problems(plan.tasks))
    return problems


def _task_problems(number: int, task: PlanTask) -> list[str]:
    who = _who(number, task.key)
    problems: list[str] = []
    if not task.key:
        heading = f" ({_quote(task.title)})" if task.title else ""
        problems.append(
            f"{who}{heading} has no key: start its heading with one, as in "
            "`#### add-cache \u2014 Cache the results`"
        )
    elif not is_key(task.key):
        problems.append(
            f"{who}: {_quote(task.key)} is not a valid key: use 1 to 63 lower-case letters, digits, `-` "
            "and `_`, starting with a letter or a digit"
        )
    elif task.key == NONE:
        problems.append(f"{who}: `{NONE}` cannot be a key (it means \u201cno dependencies\u201d)")
    elif task.key in RESERVED_KEYS:
        problems.append(
            f"{who}: `{task.key}` is reserved (the tasks of an idea's stages use the stage names): "
            f"choose another key"
        )
    if not task.title:
        problems.append(f"{who} has no title: write it after the key, as in `#### <key> \u2014 <title>`")
    elif "\n" in task.title:
        problems.append(f"{who}: the title must be one line")
    elif CLOSING.search(task.title):
        problems.append(f"{who}: the title cannot end with `#` after a space (markdown would drop it)")
    if task.description and (trouble := _structure_trouble(task.description, tasks=True, fields=True)):
        problems.append(f"{who}: the description {trouble}")
    seen: set[str] = set()
    for key in task.depends_on:
        if not is_key(key) or key == NONE:
            problems.append(f"{who}: dependency {_quote(key)} is not a task key")
        elif key == task.key:
            problems.append(f"{who} depends on itself: remove {_quote(key)} from its dependencies")
        elif key in seen:
            problems.append(f"{who} lists dependency {_quote(key)} more than once")
        seen.add(key)
    if not task.acceptance_criteria:
        problems.append(
            f"{who} has no acceptance criteria: add `{CRITERIA_LABEL}` followed by a `- [ ] ...` list"
        )
    for criterion in task.acceptance_criteria:
        if not criterion:
            problems.append(f"{who} has an empty acceptance criterion")
        elif "\n" in criterion:
            problems.append(f"{who}: acceptance criterion {_quote(criterion)} must be one line")
    for path in task.paths:
        trouble = _path_trouble(path)
        if trouble:
            problems.append(f"{who}: path {_quote(path)} {trouble}")
    return problems


def _path_trouble(path: str) -> str | None:
    if not path:
        return "is empty"
    if any(char in path for char in "\n,`"):
        return "cannot hold a line break, a comma or a backtick"
    if path.lower() == NONE:
        return f"cannot be `{NONE}` (it means \u201cno paths\u201d)"
    if path.startswith("/") or ".." in path.split("/"):
        return "must be relative to the repository root, without `..`"
    return None


def _graph_problems(tasks: Sequence[PlanTask]) -> list[str]:
    """Unknown dependencies and cycles (self-dependencies and bad keys are the task checks' business)."""
    known = {task.key for task in tasks}
    problems = [
        f"{_who(number, task.key)} depends on {_quote(key)}, which is not a task of this plan"
        for number, task in enumerate(tasks, 1)
        for key in dict.fromkeys(task.depends_on)
        if key not in known and is_key(key) and key != NONE
    ]
    problems.extend(
        "dependency cycle: "
        + " \u2192 ".join(f"`{key}`" for key in (*cycle, cycle[0]))
        + " (each task depends on the next): remove one of these dependencies"
        for cycle in find_cycles(tasks)
    )
    return problems


def _structure_trouble(text: str, *, tasks: bool, fields: bool = False) -> str | None:
    """What in ``text`` the parser would read as plan structure, if anything: a section heading, a task
    heading (``tasks``), a field or acceptance-criteria line (``fields``), or a code block left open."""
    fences = Fences()
    for line in text.split("\n"):
        if fences.code(line):
            continue
        heading = atx_heading(line)
        if _section_heading(line) is not None:
            return f"has a line that would start a new section: {_quote(line)}"
        if tasks and heading is not None and heading[0] == 4:
            return f"has a `####` heading, which would start a new task: {_quote(line)}"
        if fields and _classify(line)[0] is not None:
            return f"has a line that would be read as a task field: {_quote(line)}"
    if fences.inside:
        return "opens a code block that it does not close"
    return None


# --- the DAG ------------------------------------------------------------------------------------------------


def is_key(text: str) -> bool:
    """Whether ``text`` has the syntax of a task key (:data:`KEY_PATTERN`)."""
    return _KEY.fullmatch(text) is not None


def find_cycles(tasks: Sequence[PlanTask]) -> tuple[tuple[str, ...], ...]:
    """One dependency cycle per group of tasks that depend on each other, each as keys in order (each
    depends on the next, the last on the first), starting from the earliest task in plan order.

    Self-dependencies and unknown dependencies are left out; a repeated key counts once (its first task).
    """
    position: dict[str, int] = {}
    for task in tasks:
        position.setdefault(task.key, len(position))
    graph: dict[str, list[str]] = {}
    for task in tasks:
        if task.key not in graph:
            graph[task.key] = [
                key for key in dict.fromkeys(task.depends_on) if key in position and key != task.key
            ]
    cycles: list[tuple[str, ...]] = []
    for component in _components(graph):
        if len(component) < 2:
            continue
        members = set(component)
        path: list[str] = []
        seen: dict[str, int] = {}
        node = min(component, key=position.__getitem__)
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(key for key in graph[node] if key in members)
        cycle = path[seen[node] :]
        first = min(range(len(cycle)), key=lambda index: position[cycle[index]])
        cycles.append(tuple(cycle[first:] + cycle[:first]))
    return tuple(sorted(cycles, key=lambda cycle: position[cycle[0]]))


def topological_order(tasks: Sequence[PlanTask]) -> tuple[PlanTask, ...]:
    """The tasks with every task after its dependencies; among the tasks ready at each step, the earliest
    in plan order comes first. Raise :class:`InvalidPlan` if the keys repeat or the dependencies do not
    form a DAG of these tasks."""
    problems = [f"duplicate key {_quote(key)}" for key in _repeated(task.key for task in tasks)]
    problems.extend(
        f"{_who(number, task.key)} depends on itself"
        for number, task in enumerate(tasks, 1)
        if task.key in task.depends_on
    )
    problems.extend(_graph_problems(tasks))
    if problems:
        raise InvalidPlan(problems)
    position = {task.key: index for index, task in enumerate(tasks)}
    waiting = {task.key: len(set(task.depends_on)) for task in tasks}
    dependents: dict[str, list[str]] = {task.key: [] for task in tasks}
    for task in tasks:
        for key in set(task.depends_on):
            dependents[key].append(task.key)
    ready = [position[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[PlanTask] = []
    while ready:
        task = tasks[heapq.heappop(ready)]
        order.append(task)
        for key in dependents[task.key]:
            waiting[key] -= 1
            if waiting[key] == 0:
                heapq.heappush(ready, position[key])
    return tuple(order)


def ready_keys(tasks: Sequence[PlanTask], done: AbstractSet[str]) -> tuple[str, ...]:
    """The keys of the tasks not done whose dependencies are all done, in plan order."""
    return tuple(
        task.key for task in tasks if task.key not in done and all(key in done for key in task.depends_on)
    )


def _components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _repeated(keys: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for key in keys:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return repeated


# --- text ---------------------------------------------------------------------------------------------------


def _section_heading(line: str) -> str | None:
    heading = atx_heading(line)
    if heading is None or heading[0] not in (2, 3):
        return None
    return _section_name(heading[1])


def _section_name(text: str) -> str | None:
    return _SECTION_NAMES.get(heading_name(text).replace(" and ", " & "))


def _one_line(text: str) -> str:
    return clean(text).strip(" \t")


def _block(text: str) -> str:
    """Cleaned text without blank lines at either end (the lines themselves are kept as they are)."""
    lines = clean(text).split("\n")
    while lines and not lines[-1].strip(" \t"):
        lines.pop()
    start = 0
    while start < len(lines) and not lines[start].strip(" \t"):
        start += 1
    return "\n".join(lines[start:])


def _who(number: int, key: str) -> str:
    return f"task {_quote(key)}" if key else f"task {number}"


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _quote(value: str) -> str:
    """Plan text shown in a problem: one short line in a code span."""
    return quote(value, 60)
