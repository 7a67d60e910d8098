"""A deterministic example agent for Facteur's ``command`` backend: it copies, it does not think.

It is meant for ``facteur demo`` and for tests, never for real work. Given the same inputs it does the
same thing, which is what makes it useful to exercise Facteur's planning, task and review machinery
without a language model.

How Facteur runs it
-------------------
The prompt is on stdin (read, and ignored but for its length in the log). The environment names the rest:

``FACTEUR_AGENT_WORKDIR``
    the repository checkout to work in (also the working directory);
``FACTEUR_AGENT_STAGE``
    ``planning``, ``implementation`` or ``review``;
``FACTEUR_AGENT_CONTEXT_FILE``
    a JSON file with ``stage``, ``repository``, ``base``, ``head``, ``idea`` (``id``, ``title``, ``spec``),
    ``task`` (``key``, ``title``, ``description``, ``acceptanceCriteria``, ``paths``, ``dependsOn``; null at
    planning), ``plan``, ``dependencies``, ``planFile`` and ``feedback``. Missing keys are tolerated.

The exit status is the outcome (0 succeeded, 1 failed, 2 the agent was misused: unknown stage, unsafe
path, unreadable context), stdout is the final message Facteur keeps as the run's summary, stderr a log.

What each stage does
--------------------
planning
    The idea's text (``idea.spec.text``, else ``idea.spec.body``, else ``idea.spec.goal``) must hold the
    task list, written in the plan's task format (``#### key — title``, a description, ``- Depends on:``,
    ``- Paths:``, ``Acceptance criteria:``). The list runs from the first ``####`` heading to the next
    heading of level 1 to 3. Facteur's own plan reader (:func:`facteur.domain.plans.parse_plan`) reads it;
    the agent fills the other sections with short text taken from the spec (goal, constraints, success
    metrics) and writes the plan to ``planFile`` with :func:`facteur.domain.plans.render_plan`.
implementation
    Every fenced code block of the task's description whose info string names a path
    (```` ```python path=calc/ops.py ````, or ``file=``) becomes that file's whole content;
    ``mode=append`` adds the block to the end of the file instead. Blocks without a path are ignored.
review
    Runs the project's tests in the checkout (``python -m pytest -q`` when the project looks like a pytest
    project and pytest is importable, else ``python -m unittest discover -v``). Stdout starts with
    ``APPROVED`` or ``CHANGES REQUESTED``, then the end of the test output.

Switches for tests (``EXAMPLE_AGENT_*``)
------------------------------------------------
``EXAMPLE_AGENT_BAD_PLAN_ONCE=1``
    the first planning call without ``feedback`` writes a plan without tasks (invalid on purpose);
``EXAMPLE_AGENT_FAIL_ONCE=<key>[,<key>...]``
    the first implementation of these tasks writes its files, then exits 1;
``EXAMPLE_AGENT_STATE_DIR``
    where "first" is remembered; without it, in the checkout's git directory (never committed).

Honest limits
-------------
It does not read the prompt, the plan, the dependencies' summaries or review feedback: a retried task
applies the same blocks again. It cannot fix a failing test or resolve a conflict. The review is only the
test run. The task text goes through Facteur's plan reader, which drops HTML comments and invisible
characters, so a code block cannot rely on them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

try:
    from facteur.domain.idea_spec import InvalidIdeaSpec, parse_idea_spec
    from facteur.domain.markdown import Fences, atx_heading
    from facteur.domain.plans import (
        PLAN_SECTIONS,
        READY_CHECKLIST,
        TASK_BREAKDOWN,
        InvalidPlan,
        Plan,
        PlanTask,
        checklist,
        parse_plan,
        render_plan,
    )
    from facteur.domain.untrusted import PLAN_MARKER
except ImportError as error:  # run with an interpreter that does not have Facteur installed
    print(
        f"script agent: cannot import facteur ({error}): run this script with the Python interpreter "
        "Facteur is installed in",
        file=sys.stderr,
    )
    raise SystemExit(2) from error

STAGES = ("planning", "implementation", "review")
BAD_PLAN_ONCE = "EXAMPLE_AGENT_BAD_PLAN_ONCE"
FAIL_ONCE = "EXAMPLE_AGENT_FAIL_ONCE"
STATE_DIR = "EXAMPLE_AGENT_STATE_DIR"
STATE_FILE = "facteur-example-agent-state.json"
#: how many lines of test output the review verdict shows
TEST_OUTPUT_LINES = 40

_FENCE_OPENING = re.compile(r"^( {0,3})(?:`{3,}|~{3,})(.*)$")

TASK_LIST_EXAMPLE = """\
#### add — Add two numbers

Create the module:

```python path=calc/arithmetic.py
def add(a: float, b: float) -> float:
    return a + b
```

- Depends on: none
- Paths: `calc/arithmetic.py`

Acceptance criteria:
- [ ] `add(2, 3) == 5`"""


class Refused(Exception):
    """The agent stops: ``message`` goes to stderr and ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Job:
    stage: str
    workdir: Path
    context: Mapping[str, Any]

    @property
    def idea(self) -> Mapping[str, Any]:
        return _mapping(self.context.get("idea"))

    @property
    def feedback(self) -> str | None:
        value = self.context.get("feedback")
        return value if isinstance(value, str) and value.strip() else None


def main() -> int:
    prompt = sys.stdin.buffer.read().decode("utf-8", "replace")
    try:
        return run(prompt)
    except Refused as refusal:
        log(str(refusal))
        return refusal.status


def run(prompt: str) -> int:
    workdir = Path(os.environ.get("FACTEUR_AGENT_WORKDIR") or os.getcwd())
    if not workdir.is_dir():
        raise Refused(f"the working directory {workdir} does not exist")
    stage = os.environ.get("FACTEUR_AGENT_STAGE", "")
    _check_stage(stage)
    context = _load_context(required=stage != "review")
    stage = stage or _text(context, "stage")  # FACTEUR_AGENT_STAGE unset: the context file's
    if not stage:
        raise Refused(f"no stage given: set FACTEUR_AGENT_STAGE to one of {', '.join(STAGES)}")
    _check_stage(stage)
    log(f"stage {stage}, prompt of {len(prompt)} characters")
    return HANDLERS[stage](Job(stage=stage, workdir=workdir, context=context))


def _check_stage(stage: str) -> None:
    """Refuse a stage this agent does not know (``""``, not known yet, passes)."""
    if stage and stage not in HANDLERS:
        raise Refused(f"unknown stage {stage!r}: FACTEUR_AGENT_STAGE must be one of {', '.join(STAGES)}")


def log(message: str) -> None:
    print(f"script agent: {message}", file=sys.stderr)


def _load_context(*, required: bool) -> Mapping[str, Any]:
    name = os.environ.get("FACTEUR_AGENT_CONTEXT_FILE")
    if not name:
        if required:
            raise Refused("FACTEUR_AGENT_CONTEXT_FILE is not set: the agent needs its context file")
        return {}
    try:
        data = json.loads(Path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise Refused(f"cannot read the context file {name}: {error}") from error
    if not isinstance(data, dict):
        raise Refused(f"the context file {name} does not hold a JSON object")
    return data


# --- planning -----------------------------------------------------------------------------------------------


def plan(job: Job) -> int:
    spec = _mapping(job.idea.get("spec"))
    source = next((key for key in ("text", "body", "goal") if _text(spec, key)), None)
    raw = _text(spec, source) if source else ""
    prose, listing = split_idea_text(raw)
    if listing is None:
        raise Refused(
            "the example script agent does not plan: it copies the task list the idea spells out, and this "
            "idea has none. Write the tasks in the idea's text in the plan's task format, for example:\n\n"
            + TASK_LIST_EXAMPLE,
            status=1,
        )
    tasks = read_tasks(listing)
    goal = prose if source == "goal" else _text(spec, "goal")
    constraints = _text(spec, "constraints")
    metrics = _strings(spec.get("success_metrics"))
    if raw and not (goal and constraints and metrics):
        try:
            parsed = parse_idea_spec(raw)
        except InvalidIdeaSpec:
            pass  # not a complete idea spec: use what there is
        else:
            goal, constraints = goal or parsed.goal, constraints or parsed.constraints
            metrics = metrics or list(parsed.success_metrics)
    goal = goal or prose or _text(job.idea, "title") or "Carry out the tasks the idea lists."

    bad = _switch_on(BAD_PLAN_ONCE) and job.feedback is None
    if bad and not State.locate(job.workdir, BAD_PLAN_ONCE).first_time(f"planning:{_text(job.idea, 'id')}"):
        bad = False
    sections = plan_sections(job, tasks, goal=goal, constraints=constraints, metrics=metrics)
    text = render_plan(Plan(sections=sections, tasks=() if bad else tasks))
    if not bad:
        try:
            parse_plan(text)  # render_plan does not check: a goal with a `###` heading would break the plan
        except InvalidPlan as error:
            raise Refused(_problems("the plan would not be valid", error), status=1) from error
    target = safe_path(job.workdir, _text(job.context, "planFile") or "PLAN.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8", newline="\n")
    if bad:
        print(
            f"planned 0 tasks: {BAD_PLAN_ONCE} is set, so this first plan has no tasks (invalid on purpose)"
        )
    else:
        print(f"planned {_count(len(tasks), 'task')}: {', '.join(task.key for task in tasks)}")
    return 0


def split_idea_text(text: str) -> tuple[str, str | None]:
    """The prose before the text's first heading, and the task list: from the first ``####`` heading to
    the next heading of level 1 to 3 (headings inside code blocks do not count); ``None`` without one."""
    lines = text.replace("\r\n", "\n").split("\n")
    fences = Fences()
    first_heading: int | None = None
    start: int | None = None
    end = len(lines)
    for index, line in enumerate(lines):
        heading = None if fences.code(line) else atx_heading(line)
        if heading is None:
            continue
        if first_heading is None:
            first_heading = index
        if start is None and heading[0] == 4:
            start = index
        elif start is not None and heading[0] <= 3:
            end = index
            break
    prose = "\n".join(lines[:first_heading]).strip()
    return prose, None if start is None else "\n".join(lines[start:end])


def read_tasks(listing: str) -> tuple[PlanTask, ...]:
    """The tasks of a task list, read by Facteur's plan reader: the list is put under the Task Breakdown of
    a skeleton plan, so every rule of a plan's tasks applies."""
    lines = [PLAN_MARKER]
    for name in PLAN_SECTIONS:
        lines.extend(("", f"### {name}", "", listing if name == TASK_BREAKDOWN else "(skeleton)"))
    try:
        return parse_plan("\n".join(lines)).tasks
    except InvalidPlan as error:
        raise Refused(_problems("the idea's task list cannot be read", error), status=1) from error


def plan_sections(
    job: Job, tasks: Sequence[PlanTask], *, goal: str, constraints: str, metrics: Sequence[str]
) -> dict[str, str]:
    repository, base = _text(job.context, "repository"), _text(job.context, "base")
    context = constraints or "The idea states no constraints."
    if repository:
        context += f"\n\nThe work happens in `{repository}`" + (f", from `{base}`." if base else ".")
    deliverables = "\n".join(
        f"- `{task.key}` — {task.title}"
        + (": " + ", ".join(f"`{path}`" for path in task.paths) if task.paths else "")
        for task in tasks
    )
    validation = (
        "The idea's success metrics:\n\n" + "\n".join(f"- {metric}" for metric in metrics)
        if metrics
        else "The idea gives no success metrics."
    )
    validation += (
        "\n\nEach task is checked against its acceptance criteria; the review runs the project's tests "
        "(`python -m pytest -q`, or `python -m unittest discover -v` without pytest)."
    )
    return {
        "Objective": goal,
        "Context & Constraints": context,
        TASK_BREAKDOWN: f"The {_count(len(tasks), 'task')} the idea lists, copied as written: this plan "
        "comes from Facteur's example script agent, which transcribes and does not plan.",
        "Deliverables": deliverables,
        "Validation & Observability": validation,
        "Risks & Contingencies": "Nobody reasoned about this plan: each task's change is exactly the code "
        "blocks its description holds. If a block is wrong, the change is wrong; the test run of the review "
        "is the only check. If it fails, fix the idea's task list and plan again.",
        "Communication & Handoff": "Reviewers can compare each task's diff with the code blocks of its "
        "description. The example script agent is for demos and tests only.",
        "Ready Checklist": checklist(READY_CHECKLIST),
    }


# --- implementation -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeBlock:
    path: str
    append: bool
    content: str


def implement(job: Job) -> int:
    task = _mapping(job.context.get("task"))
    key = _text(task, "key")
    if not key:
        raise Refused("the implementation stage needs a task (with a key) in the context file")
    description = task.get("description")
    blocks, ignored = code_blocks(description if isinstance(description, str) else "")
    targets = [safe_path(job.workdir, block.path) for block in blocks]  # every path checked before writing
    failing = key in {part.strip() for part in os.environ.get(FAIL_ONCE, "").split(",")}
    state = State.locate(job.workdir, FAIL_ONCE) if failing else None
    skipped = f" ({_count(ignored, 'code block')} without a path ignored)" if ignored else ""
    if not blocks:
        print(f"task `{key}`: nothing to apply: its description has no code block naming a path{skipped}")
    else:
        done: dict[str, str] = {}  # path -> "written" (replaced at least once) or "appended"
        for block, target in zip(blocks, targets, strict=True):
            write_block(target, block)
            appended = block.append and done.get(block.path, "appended") == "appended"
            done[block.path] = "appended" if appended else "written"
        files = ", ".join(f"{path} ({how})" for path, how in done.items())
        print(f"task `{key}`: {_count(len(done), 'file')} changed: {files}{skipped}")
    if state is not None and state.first_time(f"implementation:{_text(job.idea, 'id')}:{key}"):
        print(f"failing on purpose: {FAIL_ONCE} names `{key}` and this is its first implementation")
        log(f"{FAIL_ONCE}: task {key} fails this once")
        return 1
    return 0


def code_blocks(description: str) -> tuple[list[CodeBlock], int]:
    """The fenced code blocks of a description whose info string names a path (``path=`` or ``file=``),
    in order, and how many blocks name none."""
    blocks: list[CodeBlock] = []
    ignored = 0
    fences = Fences()
    attributes: dict[str, str] = {}
    indent = 0
    body: list[str] = []
    for line in description.split("\n"):
        inside = fences.inside
        if not fences.code(line):
            continue
        if not inside:  # an opening fence
            match = _FENCE_OPENING.match(line)
            indent = len(match.group(1)) if match else 0
            attributes = _info_attributes(match.group(2) if match else "")
            body = []
        elif fences.inside:  # a line of code
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
        else:  # the closing fence
            path = attributes.get("path") or attributes.get("file")
            if path is None:
                ignored += 1
                continue
            mode = attributes.get("mode", "replace")
            if mode not in ("replace", "append"):
                raise Refused(f"code block for {path}: unknown mode {mode!r} (use replace or append)")
            content = "\n".join(body) + "\n" if body else ""
            blocks.append(CodeBlock(path=path, append=mode == "append", content=content))
    if fences.inside and (attributes.get("path") or attributes.get("file")):
        raise Refused(f"the code block for {attributes.get('path') or attributes.get('file')} is not closed")
    return blocks, ignored


def _info_attributes(info: str) -> dict[str, str]:
    """The ``name=value`` words of a fence's info string (``python path=a.py mode=append``)."""
    try:
        words = shlex.split(info)
    except ValueError as error:
        raise Refused(f"cannot read the code block's info string {info!r}: {error}") from error
    return dict(word.split("=", 1) for word in words if "=" in word)


def write_block(target: Path, block: CodeBlock) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = block.content
    if block.append and target.exists():
        existing = target.read_text(encoding="utf-8")
        text = existing + ("\n" if existing and not existing.endswith("\n") else "") + text
    target.write_text(text, encoding="utf-8", newline="\n")


def safe_path(workdir: Path, relative: str) -> Path:
    """``relative`` inside ``workdir``; refuse absolute paths, ``..``, the git directory and paths that
    leave the checkout through a symbolic link."""
    pure = PurePosixPath(relative)
    reason = None
    if not relative.strip() or pure.is_absolute() or "\\" in relative or re.match(r"^[A-Za-z]:", relative):
        reason = "only paths relative to the repository root are written"
    elif ".." in pure.parts:
        reason = "a path cannot hold `..`"
    elif pure.parts[0] == ".git":
        reason = "the git directory is not written"
    else:
        root = workdir.resolve()
        target = (root / pure).resolve()
        if target == root or root not in target.parents:
            reason = "it leads outside the repository"
    if reason is not None:
        raise Refused(f"refusing to write {relative!r}: {reason}")
    return workdir / pure


# --- review -------------------------------------------------------------------------------------------------


def review(job: Job) -> int:
    pytest_project = any((job.workdir / name).exists() for name in ("pyproject.toml", "pytest.ini", "tests"))
    if pytest_project and importlib.util.find_spec("pytest") is not None:
        arguments = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]  # no .pytest_cache in the checkout
    else:
        arguments = ["-m", "unittest", "discover", "-v"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ in the checkout either
    completed = subprocess.run(
        [sys.executable, *arguments],
        cwd=job.workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        check=False,
    )
    approved = completed.returncode == 0
    tail = completed.stdout.rstrip("\n").split("\n")[-TEST_OUTPUT_LINES:]
    print("APPROVED" if approved else "CHANGES REQUESTED")
    print(f"$ python {' '.join(arguments)}  # exit status {completed.returncode}")
    print("\n".join(tail))
    return 0 if approved else 1


# --- state of the test switches -----------------------------------------------------------------------------


class State:
    """Marks of what already happened once, in a JSON file that outlives the run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def locate(cls, workdir: Path, switch: str) -> State:
        """The shared state directory when set, else the checkout's git directory."""
        shared = os.environ.get(STATE_DIR)
        if shared:
            directory = Path(shared)
            directory.mkdir(parents=True, exist_ok=True)
            return cls(directory / STATE_FILE)
        git = workdir / ".git"
        if git.is_file():  # a worktree: ".git" names its git directory
            line = git.read_text(encoding="utf-8").strip()
            if line.startswith("gitdir:"):
                git = workdir / line.removeprefix("gitdir:").strip()
        if not git.is_dir():
            raise Refused(
                f"{switch} needs somewhere to remember what it did: the checkout has no git directory; "
                f"set {STATE_DIR} to a directory"
            )
        return cls(git / STATE_FILE)

    def first_time(self, mark: str) -> bool:
        """Whether ``mark`` is new (and record it)."""
        try:
            marks = set(json.loads(self.path.read_text(encoding="utf-8")).get("done", []))
        except FileNotFoundError:
            marks = set()
        except (OSError, ValueError, AttributeError) as error:
            raise Refused(f"cannot read the state file {self.path}: {error}") from error
        if mark in marks:
            return False
        marks.add(mark)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"done": sorted(marks)}, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.path)
        return True


# --- small helpers ------------------------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return []


def _switch_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _problems(what: str, error: InvalidPlan) -> str:
    return f"{what}:\n" + "\n".join(f"- {problem}" for problem in error.problems)


HANDLERS: dict[str, Callable[[Job], int]] = {"planning": plan, "implementation": implement, "review": review}

if __name__ == "__main__":
    raise SystemExit(main())
