"""``facteur demo`` succeeds only when the idea completed and the project's tests pass on the last branch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facteur.cli.main import app
from facteur.demo import session
from facteur.demo.session import DemoOptions, DemoSummary


@pytest.mark.parametrize(
    ("state", "passed", "succeeded"),
    [
        ("completed", True, True),
        ("completed", False, False),
        ("failed", True, False),
        ("failed", False, False),
    ],
)
def test_success_needs_a_completed_idea_and_passing_tests(state: str, passed: bool, succeeded: bool) -> None:
    summary = DemoSummary(directory=Path("."), state=state, tests_passed=passed)
    assert summary.succeeded is succeeded
    assert summary.to_json()["succeeded"] is succeeded


def test_the_command_exits_1_when_the_tests_fail_on_a_completed_idea(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def finished(options: DemoOptions, say: Callable[[str], None]) -> DemoSummary:
        return DemoSummary(
            directory=tmp_path, state="completed", tests_passed=False, last_branch="facteur/x-dot"
        )

    monkeypatch.setattr(session, "run_demo", finished)
    result = CliRunner().invoke(app, ["demo", "--json"])
    assert result.exit_code == 1
    assert "the idea is completed, the tests fail on facteur/x-dot" in result.output
