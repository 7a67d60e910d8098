"""The example script agent (examples/agents/script_agent.py), run as Facteur's command backend runs it: a
subprocess with its prompt on stdin, its context in ``FACTEUR_AGENT_*`` variables and a context file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facteur.domain.plans import InvalidPlan, Plan, parse_plan
from tests.support.services import REPO_ROOT

AGENT_DIR = REPO_ROOT / "examples" / "agents"
SCRIPT = AGENT_DIR / "script_agent.py"
STATE_FILE = "facteur-example-agent-state.json"
IDEA_ID = "7d4a3f0e-0000-4000-8000-000000000001"

TASKS = """\
#### one — Write the first file

```python path=src/one.py
ONE = 1
```

- Depends on: none
- Paths: `src/one.py`

Acceptance criteria:
- [ ] `src/one.py` holds `ONE = 1`
"""


def readme_block(opening: str) -> str:
    """The first fenced block opened by the line ``opening`` in the README's demo section."""
    lines = (AGENT_DIR / "README.md").read_text(encoding="utf-8").split("\n")
    start = lines.index(opening, lines.index("## A demo idea")) + 1
    closing = opening[: len(opening) - len(opening.lstrip("`"))]
    return "\n".join(lines[start : lines.index(closing, start)]) + "\n"


def demo_idea() -> str:
    return readme_block("````markdown")


def calc_project(root: Path) -> Path:
    """The demo's ``calc`` project, as the README describes it: a test that fails until the three tasks
    are applied."""
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "calc"\nversion = "0.1.0"\n')
    (root / "calc").mkdir()
    (root / "calc" / "__init__.py").write_text('"""A tiny calculator: the project of Facteur\'s demo."""\n')
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "test_calc.py").write_text(readme_block("```python"))
    return root


@dataclass
class Agent:
    """Runs the script in ``workdir`` with a context file under ``tmp``."""

    tmp: Path
    workdir: Path

    def run(
        self,
        stage: str,
        context: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        prompt: str = "Implement the task.",
        workdir: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("FACTEUR_", "PYTEST_ADDOPTS"))}
        environ |= {
            "FACTEUR_AGENT_WORKDIR": str(workdir or self.workdir),
            "FACTEUR_AGENT_STAGE": stage,
            # Facteur's interpreter has pytest plugins the tiny projects do not need: skip them, for speed
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        if context is not None:
            path = self.tmp / "context.json"
            path.write_text(json.dumps({"stage": stage, **context}))
            environ["FACTEUR_AGENT_CONTEXT_FILE"] = str(path)
        environ |= env or {}
        return subprocess.run(
            [sys.executable, str(SCRIPT)],
            input=prompt,
            cwd=workdir or self.workdir,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    return Agent(tmp=tmp_path, workdir=workdir)


def planning(spec: Mapping[str, Any], *, feedback: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "repository": "demo/calc",
        "base": "main",
        "head": "facteur/plan",
        "idea": {"id": IDEA_ID, "title": "Calc", "spec": dict(spec)},
        "task": None,
        "plan": None,
        "dependencies": [],
        "planFile": "PLAN.md",
        "feedback": feedback,
        **extra,
    }


def implementation(key: str, description: str) -> dict[str, Any]:
    task = {"key": key, "title": key, "description": description, "acceptanceCriteria": ["done"]}
    return {
        "idea": {"id": IDEA_ID, "title": "Calc", "spec": {}},
        "task": task | {"paths": [], "dependsOn": []},
        "plan": None,
        "dependencies": [],
        "planFile": "PLAN.md",
        "feedback": None,
    }


def read_plan(workdir: Path, name: str = "PLAN.md") -> Plan:
    return parse_plan((workdir / name).read_text(encoding="utf-8"))


# --- planning -----------------------------------------------------------------------------------------------


def test_planning_copies_the_ideas_tasks_into_a_valid_plan(agent: Agent) -> None:
    result = agent.run("planning", planning({"text": demo_idea()}), prompt="Plan this idea, please.")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "planned 3 tasks: add, mean, describe\n"
    assert "prompt of 23 characters" in result.stderr
    plan = read_plan(agent.workdir)
    assert plan.keys == ("add", "mean", "describe")
    assert [task.depends_on for task in plan.tasks] == [(), (), ("add", "mean")]
    assert plan.task("describe").paths == ("calc/report.py",)
    assert plan.task("mean").acceptance_criteria == (
        "`mean([1, 2, 3, 4]) == 2.5`",
        "`mean([])` raises `ValueError`",
    )
    assert "```python path=calc/arithmetic.py\n" in plan.task("add").description
    assert "    return a + b\n```" in plan.task("add").description
    # the other sections come from the idea spec in the text
    assert plan.sections["Objective"].startswith("Make the calc test suite pass")
    assert plan.sections["Context & Constraints"].startswith("Standard library only")
    assert "`demo/calc`, from `main`" in plan.sections["Context & Constraints"]
    assert (
        "- `python -m pytest -q` passes in the repository: 3 tests"
        in plan.sections["Validation & Observability"]
    )
    assert (
        "- `describe` — Describe a list of numbers in one line: `calc/report.py`"
        in plan.sections["Deliverables"]
    )
    assert plan.sections["Ready Checklist"].startswith("- [ ] Dependencies clarified")


def test_planning_prefers_the_parsed_spec_fields_and_the_given_plan_file(agent: Agent) -> None:
    spec = {"goal": "Ship one.", "constraints": "None.", "success_metrics": ["one is 1"], "body": TASKS}

    result = agent.run("planning", planning(spec, planFile="docs/PLAN.md"))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "planned 1 task: one\n"
    assert not (agent.workdir / "PLAN.md").exists()
    plan = read_plan(agent.workdir, "docs/PLAN.md")
    assert plan.sections["Objective"] == "Ship one."
    assert plan.sections["Context & Constraints"].startswith("None.")
    assert "- one is 1" in plan.sections["Validation & Observability"]


def test_planning_from_the_goal_alone_keeps_the_task_list_out_of_the_objective(agent: Agent) -> None:
    result = agent.run("planning", planning({"goal": "Write one file.\n\n" + TASKS}))

    assert result.returncode == 0, result.stderr
    plan = read_plan(agent.workdir)
    assert plan.sections["Objective"] == "Write one file."
    assert plan.keys == ("one",)
    assert plan.sections["Validation & Observability"].startswith("The idea gives no success metrics.")


def test_planning_without_a_task_list_fails_and_shows_the_format(agent: Agent) -> None:
    spec = {"goal": "Make the tests pass.", "text": "### Goal\n\nMake the tests pass.\n"}

    result = agent.run("planning", planning(spec))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "does not plan: it copies the task list" in result.stderr
    assert "#### add — Add two numbers" in result.stderr
    assert not (agent.workdir / "PLAN.md").exists()


def test_planning_reports_tasks_that_break_the_plan_rules(agent: Agent) -> None:
    tasks = TASKS.replace("- Depends on: none", "- Depends on: ghost")

    result = agent.run("planning", planning({"text": tasks}))

    assert result.returncode == 1
    assert "the idea's task list cannot be read" in result.stderr
    assert "task `one` depends on `ghost`, which is not a task of this plan" in result.stderr
    assert not (agent.workdir / "PLAN.md").exists()


def test_bad_plan_once_writes_one_invalid_plan_when_there_is_no_feedback(agent: Agent) -> None:
    (agent.workdir / ".git").mkdir()
    env = {"EXAMPLE_AGENT_BAD_PLAN_ONCE": "1"}
    idea = demo_idea()

    with_feedback = agent.run("planning", planning({"text": idea}, feedback="make it smaller"), env=env)

    assert with_feedback.stdout == "planned 3 tasks: add, mean, describe\n"
    assert read_plan(agent.workdir).keys == ("add", "mean", "describe")

    first = agent.run("planning", planning({"text": idea}), env=env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("planned 0 tasks: EXAMPLE_AGENT_BAD_PLAN_ONCE is set")
    with pytest.raises(InvalidPlan, match="the plan has no tasks"):
        read_plan(agent.workdir)

    retry = agent.run("planning", planning({"text": idea}, feedback="invalid plan: no tasks"), env=env)

    assert retry.returncode == 0, retry.stderr
    assert read_plan(agent.workdir).keys == ("add", "mean", "describe")
    # only once: a later call without feedback writes the real plan too
    (agent.workdir / "PLAN.md").unlink()
    later = agent.run("planning", planning({"text": idea}), env=env)
    assert later.stdout == "planned 3 tasks: add, mean, describe\n"
    assert read_plan(agent.workdir).keys == ("add", "mean", "describe")


# --- implementation -----------------------------------------------------------------------------------------

DESCRIPTION = """\
Write the module and its notes.

```python path=src/calc/ops.py
def add(a: int, b: int) -> int:
    return a + b
```

A block without a path is only an illustration:

```python
print("not written")
```

```text file="docs/release notes.md"
Adds `add`.
```
"""


def test_implementation_writes_the_blocks_that_name_a_path(agent: Agent) -> None:
    (agent.workdir / "src" / "calc").mkdir(parents=True)
    (agent.workdir / "src" / "calc" / "ops.py").write_text("old = True\n")

    result = agent.run("implementation", implementation("ops", DESCRIPTION))

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "task `ops`: 2 files changed: src/calc/ops.py (written), docs/release notes.md (written) "
        "(1 code block without a path ignored)\n"
    )
    ops = (agent.workdir / "src" / "calc" / "ops.py").read_text()
    assert ops == "def add(a: int, b: int) -> int:\n    return a + b\n"
    assert (agent.workdir / "docs" / "release notes.md").read_text() == "Adds `add`.\n"
    written = sorted(str(p.relative_to(agent.workdir)) for p in agent.workdir.rglob("*") if p.is_file())
    assert written == ["docs/release notes.md", "src/calc/ops.py"]


def test_append_mode_adds_to_the_end_of_the_file(agent: Agent) -> None:
    (agent.workdir / "calc.py").write_text("A = 1")  # no final newline
    description = (
        "```python path=calc.py mode=append\nB = 2\n```\n\n"
        "```python path=new.py\nX = 0\n```\n\n"
        "```python path=new.py mode=append\nY = 1\n```\n"
    )

    result = agent.run("implementation", implementation("more", description))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "task `more`: 2 files changed: calc.py (appended), new.py (written)\n"
    assert (agent.workdir / "calc.py").read_text() == "A = 1\nB = 2\n"
    assert (agent.workdir / "new.py").read_text() == "X = 0\nY = 1\n"


def test_a_task_without_path_blocks_has_nothing_to_apply(agent: Agent) -> None:
    result = agent.run("implementation", implementation("talk", "Just words.\n\n```sh\nmake test\n```\n"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("task `talk`: nothing to apply")
    assert list(agent.workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.py", "a path cannot hold `..`"),
        ("src/../../outside.py", "a path cannot hold `..`"),
        ("/tmp/absolute.py", "only paths relative to the repository root"),
        (".git/hooks/pre-commit", "the git directory is not written"),
        ("link/escape.py", "it leads outside the repository"),
    ],
)
def test_paths_outside_the_checkout_are_refused_before_anything_is_written(
    agent: Agent, path: str, reason: str
) -> None:
    (agent.workdir / "link").symlink_to(agent.tmp)
    description = f"```python path=fine.py\nOK = 1\n```\n\n```python path={path}\nBAD = 1\n```\n"

    result = agent.run("implementation", implementation("escape", description))

    assert result.returncode == 2
    assert f"refusing to write {path!r}: {reason}" in result.stderr
    assert not (agent.workdir / "fine.py").exists()
    assert sorted(p.name for p in agent.tmp.iterdir()) == ["checkout", "context.json"]


def test_fail_once_fails_the_first_attempt_of_a_fresh_clone_only(agent: Agent, tmp_path: Path) -> None:
    env = {
        "EXAMPLE_AGENT_FAIL_ONCE": "other,ops",
        "EXAMPLE_AGENT_STATE_DIR": str(tmp_path / "s"),
    }

    first = agent.run("implementation", implementation("ops", DESCRIPTION), env=env)

    assert first.returncode == 1
    assert "failing on purpose: EXAMPLE_AGENT_FAIL_ONCE names `ops`" in first.stdout
    assert (agent.workdir / "src" / "calc" / "ops.py").exists()  # the files are written all the same
    assert (tmp_path / "s" / STATE_FILE).exists()

    clone = tmp_path / "clone"
    clone.mkdir()
    second = agent.run("implementation", implementation("ops", DESCRIPTION), env=env, workdir=clone)

    assert second.returncode == 0, second.stderr
    assert "failing on purpose" not in second.stdout
    assert (clone / "src" / "calc" / "ops.py").exists()
    unnamed = agent.run("implementation", implementation("unnamed", DESCRIPTION), env=env, workdir=clone)
    assert unnamed.returncode == 0


def test_fail_once_remembers_in_the_git_directory_without_a_state_dir(agent: Agent) -> None:
    (agent.workdir / ".git").mkdir()
    env = {"EXAMPLE_AGENT_FAIL_ONCE": "ops"}

    first = agent.run("implementation", implementation("ops", DESCRIPTION), env=env)
    second = agent.run("implementation", implementation("ops", DESCRIPTION), env=env)

    assert (first.returncode, second.returncode) == (1, 0)
    state = json.loads((agent.workdir / ".git" / STATE_FILE).read_text())
    assert state == {"done": [f"implementation:{IDEA_ID}:ops"]}


def test_fail_once_without_anywhere_to_remember_is_refused(agent: Agent) -> None:
    env = {"EXAMPLE_AGENT_FAIL_ONCE": "ops"}

    result = agent.run("implementation", implementation("ops", DESCRIPTION), env=env)

    assert result.returncode == 2
    assert "set EXAMPLE_AGENT_STATE_DIR" in result.stderr
    assert list(agent.workdir.iterdir()) == []


# --- review and the whole demo ------------------------------------------------------------------------------


def test_the_demo_project_starts_with_a_failing_test(agent: Agent) -> None:
    project = calc_project(agent.tmp / "calc")

    result = agent.run("review", workdir=project)

    assert result.returncode == 1
    assert result.stdout.startswith(
        "CHANGES REQUESTED\n$ python -m pytest -q -p no:cacheprovider  # exit status 2\n"
    )
    assert "No module named 'calc.arithmetic'" in result.stdout


def test_the_demo_idea_plans_implements_and_passes_review(agent: Agent) -> None:
    project = calc_project(agent.tmp / "calc")

    assert agent.run("planning", planning({"text": demo_idea()}), workdir=project).returncode == 0
    plan = read_plan(project)
    for task in plan.tasks:
        context = implementation(task.key, task.description)
        result = agent.run("implementation", context, workdir=project)
        assert result.returncode == 0, result.stderr

    after = agent.run("review", workdir=project)

    assert after.returncode == 0, after.stdout
    assert after.stdout.startswith("APPROVED\n")
    assert "3 passed" in after.stdout
    assert not list(project.rglob("__pycache__"))
    assert not (project / ".pytest_cache").exists()


def test_review_falls_back_to_unittest_and_shows_the_end_of_the_output(agent: Agent) -> None:
    checks = "\n".join(
        f"    def test_{n}(self) -> None:\n        self.assertEqual({n}, {n})\n" for n in range(60)
    )
    (agent.workdir / "test_numbers.py").write_text(
        f"import unittest\n\n\nclass T(unittest.TestCase):\n{checks}"
    )

    result = agent.run("review")

    assert result.returncode == 0, result.stdout
    lines = result.stdout.rstrip("\n").split("\n")
    assert lines[:2] == ["APPROVED", "$ python -m unittest discover -v  # exit status 0"]
    assert len(lines) == 2 + 40
    assert lines[-1] == "OK"
    assert "Ran 60 tests" in result.stdout


def test_review_requests_changes_when_a_test_fails(agent: Agent) -> None:
    (agent.workdir / "tests").mkdir()
    (agent.workdir / "tests" / "test_truth.py").write_text(
        "def test_truth() -> None:\n    assert 1 + 1 == 3\n"
    )

    result = agent.run("review")

    assert result.returncode == 1
    assert result.stdout.startswith(
        "CHANGES REQUESTED\n$ python -m pytest -q -p no:cacheprovider  # exit status 1\n"
    )
    assert "1 failed" in result.stdout


def test_an_unknown_stage_is_refused(agent: Agent) -> None:
    result = agent.run("deployment", planning({"text": TASKS}))

    assert result.returncode == 2
    assert "unknown stage 'deployment'" in result.stderr
    assert result.stdout == ""
    assert list(agent.workdir.iterdir()) == []
