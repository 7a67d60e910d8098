"""``facteur demo`` as a new user runs it (issue #6 §6): one command, an idea carried from planning
through two parallel tasks and a dependent one to review, a summary that tells the truth about the
repository it left behind, and exit status 0 only when the project's tests pass on the last task's branch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.acceptance


def demo(directory: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    result = subprocess.run(
        [sys.executable, "-m", "facteur", "demo", "--dir", str(directory), "--json", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout) if result.stdout.strip() else {}


def git(bare: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=bare, capture_output=True, text=True, check=True).stdout


def test_the_demo_carries_an_idea_to_reviewed_branches_whose_tests_pass(tmp_path: Path) -> None:
    result, summary = demo(tmp_path / "demo")
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["state"] == "completed" and summary["succeeded"]
    assert [(t["key"], t["depends_on"], t["state"]) for t in summary["plan"]] == [
        ("add", [], "succeeded"),
        ("multiply", [], "succeeded"),
        ("dot", ["add", "multiply"], "succeeded"),
    ]
    runs = [(r["stage"], r["task"], r["status"]) for r in summary["runs"]]
    assert runs[0] == ("planning", "planning", "succeeded")
    assert sorted(runs[1:3]) == [
        ("implementation", "add", "succeeded"),
        ("implementation", "multiply", "succeeded"),
    ]
    assert runs[3:] == [("implementation", "dot", "succeeded"), ("review", "review", "succeeded")]
    # the live display showed the stages as they happened
    progress = result.stderr
    for line in (
        "idea: registered -> planning",
        "task dot: pending -> ready",
        "idea: qa_review -> completed",
    ):
        assert line in progress
    assert progress.index("task add: queued -> running") < progress.index("task dot: ready -> queued")
    # the repository: three draft-then-reviewed pull requests, the last one ready, main untouched
    bare = tmp_path / "demo" / "forge" / "repos" / "demo" / "calc.git"
    pulls = {p["head"]: p for p in summary["pull_requests"]}
    last = summary["last_branch"]
    assert set(pulls) == {r["branch"] for r in summary["runs"] if r["stage"] == "implementation"}
    assert not pulls[last]["draft"] and all(p["draft"] for head, p in pulls.items() if head != last)
    files = git(bare, "ls-tree", "-r", "--name-only", last).split()
    assert {"calc/add.py", "calc/multiply.py", "calc/dot.py", "tests/test_calc.py"} <= set(files)
    assert "calc/add.py" not in git(bare, "ls-tree", "-r", "--name-only", "main").split()
    assert summary["commits"] == git(bare, "log", "--format=%h %s", f"main..{last}").splitlines()
    assert sum("Merge dependency branch" in c for c in summary["commits"]) == 2
    assert summary["tests"]["passed"] and "OK" in summary["tests"]["output"]
    # the audit log and the per-stage overhead
    assert summary["events"]["total"] >= 40
    assert summary["events"]["by_kind"]["run.completed"] == 5
    assert set(summary["overhead"]) == {"planning", "implementation", "review"}


def test_a_failed_task_is_resumed_and_the_demo_still_succeeds(tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    result, summary = demo(
        tmp_path / "demo", EXAMPLE_AGENT_FAIL_ONCE="dot", EXAMPLE_AGENT_STATE_DIR=str(state)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dot = [(r["attempt"], r["status"]) for r in summary["runs"] if r["task"] == "dot"]
    assert dot == [(1, "failed"), (2, "succeeded")]
    assert "task dot: running -> failed" in result.stderr
    assert not (tmp_path / "demo" / "resume").exists() or not any(
        (tmp_path / "demo" / "resume").rglob("*.patch")
    )


def test_a_demo_directory_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    result, summary = demo(tmp_path / "taken")
    assert result.returncode == 1 and summary == {}
    assert "is not empty" in result.stderr
    assert (tmp_path / "taken" / "file").read_text() == "mine"


def test_a_demo_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    result, summary = demo(tmp_path / "afile")
    assert result.returncode == 1 and summary == {}
    assert "is not a directory" in result.stderr
