"""`facteur progress-comment` against GitHub served by the OpenAPI-checking fake: one progress comment per
issue, created once and updated after, with the seeds' output lines."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from facteur.cli import progress
from facteur.cli.main import app
from facteur.domain.untrusted import PROGRESS_MARKER
from tests.support.github_api import FakeGitHub

REPO = "acme/widgets"
ENV = {"GITHUB_TOKEN": "test-token", "FACTEUR_GITHUB__API_URL": "http://github.test"}


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> FakeGitHub:
    fake = FakeGitHub()
    fake.add_repo(REPO)
    monkeypatch.setattr(progress, "transport", httpx.MockTransport(fake.handle))
    for name in ("ISSUE_REPO", "ISSUE_NUMBER", "CODEX_PROGRESS_COMMENT_MARKER", "OUTPUT_PATH"):
        monkeypatch.delenv(name, raising=False)
    return fake


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["progress-comment", *args], input=stdin, env={**ENV, **(env or {})})


def lines(result: Result) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_creates_once_then_updates_the_newest_marked_comment(github: FakeGitHub, tmp_path: Path) -> None:
    issue = github.add_issue(REPO)
    github.add_comment(REPO, issue.number, "unrelated")
    log = tmp_path / "progress.log"
    body = f"{PROGRESS_MARKER}\n- [ ] step one"
    created = run("--repo", REPO, "--issue", str(issue.number), stdin=body, env={"OUTPUT_PATH": str(log)})
    assert created.exit_code == 0, created.stderr
    first = lines(created)
    assert (first["action"], first["marker_present"]) == ("create", "1")
    comments = github.repo(REPO).comments
    assert [c.body for c in comments][-1] == body and first["comment_id"] == str(comments[-1].id)

    body_file = tmp_path / "body.md"
    body_file.write_text(f"{PROGRESS_MARKER}\n- [x] step one")
    env = {"ISSUE_REPO": REPO, "ISSUE_NUMBER": str(issue.number), "OUTPUT_PATH": str(log)}
    updated = run("--body-file", str(body_file), "--json", env=env)
    assert updated.exit_code == 0, updated.stderr
    outcome = json.loads(updated.stdout)
    assert (outcome["action"], outcome["comment_id"]) == ("update", comments[-1].id)
    assert len(github.repo(REPO).comments) == 2 and comments[-1].body.endswith("- [x] step one")
    assert [line.split()[1:3] for line in log.read_text().splitlines()] == [
        ["progress-comment", "action=create"],
        ["progress-comment", "action=update"],
    ]
    assert github.violations == []


def test_dry_run_changes_nothing_and_a_custom_marker_is_honoured(github: FakeGitHub) -> None:
    issue = github.add_issue(REPO)
    marker = "<!-- codex:progress:task-a -->"
    github.add_comment(REPO, issue.number, f"{marker}\nold")
    dry = run(
        "--repo",
        REPO,
        "--issue",
        str(issue.number),
        "--dry-run",
        stdin=f"{marker}\nnew",
        env={"CODEX_PROGRESS_COMMENT_MARKER": marker},
    )
    assert dry.exit_code == 0, dry.stderr
    assert lines(dry)["action"] == "update"
    assert github.repo(REPO).comments[-1].body == f"{marker}\nold"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--issue", "1"], "<!-- codex:progress --> x", "name the repository"),
        (["--repo", REPO], "<!-- codex:progress --> x", "name the issue"),
        (["--repo", REPO, "--issue", "1"], "no marker here", "must contain the marker"),
        (["--repo", REPO, "--issue", "1"], "   ", "the body is empty"),
    ],
)
def test_bad_input_is_named(github: FakeGitHub, args: list[str], stdin: str, message: str) -> None:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 2 and message in result.stderr
    assert github.requests == []  # refused before any call to GitHub


def test_without_credentials_or_on_a_github_error_it_says_so(github: FakeGitHub) -> None:
    body = f"{PROGRESS_MARKER} x"
    no_token = CliRunner().invoke(
        app, ["progress-comment", "--repo", REPO, "--issue", "1"], input=body, env={"GITHUB_TOKEN": ""}
    )
    assert no_token.exit_code == 2 and "no GitHub credentials" in no_token.stderr
    missing = run("--repo", "acme/nowhere", "--issue", "99", stdin=body)
    assert missing.exit_code == 1 and "GitHub refused or failed" in missing.stderr
