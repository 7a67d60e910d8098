"""``facteur progress-comment``: keep one progress comment on an issue current (what agents call during an
implementation run, as the seeds' ``codex-progress-comment`` does).

The body comes from stdin or ``--body-file`` and must contain the marker (``--marker``, else
``CODEX_PROGRESS_COMMENT_MARKER``, else ``<!-- codex:progress -->``). The newest comment holding the marker
is updated; without one a comment is created. The outcome is printed as ``key=value`` lines
(``action=create|update``, ``comment_id=``, ``comment_url=``, ``marker_present=1``) or as JSON, and appended
to the log file named by ``CODEX_PROGRESS_COMMENT_LOG_PATH`` (else ``OUTPUT_PATH``) when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from facteur.cli.common import ConfigOption, JsonOption, fail, settings_or_exit
from facteur.domain.untrusted import PROGRESS_MARKER
from facteur.errors import ForgeError

if TYPE_CHECKING:
    import httpx

    from facteur.forge.port import Forge

#: the HTTP transport to GitHub (``None``: the network); tests set one that serves a fake GitHub
transport: httpx.AsyncBaseTransport | None = None

LOG_ENV = ("CODEX_PROGRESS_COMMENT_LOG_PATH", "OUTPUT_PATH")


def progress_comment(
    *,
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file", help="The comment's body (else stdin).", dir_okay=False, show_default=False
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", envvar="ISSUE_REPO", help="owner/repo.", show_default=False)
    ] = None,
    issue: Annotated[
        int | None,
        typer.Option("--issue", envvar="ISSUE_NUMBER", min=1, help="The issue's number.", show_default=False),
    ] = None,
    marker: Annotated[
        str,
        typer.Option("--marker", envvar="CODEX_PROGRESS_COMMENT_MARKER", help="What marks the comment."),
    ] = PROGRESS_MARKER,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or update the issue's progress comment (the newest comment holding the marker)."""
    if not repo or "/" not in repo:
        fail("name the repository: --repo owner/repo (or ISSUE_REPO)", 2)
    if issue is None:
        fail("name the issue: --issue N (or ISSUE_NUMBER)", 2)
    if not marker.strip():
        fail("the marker is empty: --marker (or CODEX_PROGRESS_COMMENT_MARKER)", 2)
    body = _read_body(body_file)
    if not body.strip():
        fail("the body is empty: give it on stdin or with --body-file", 2)
    if marker not in body:
        fail(f"the body must contain the marker {marker!r}, so that the next update finds this comment", 2)
    settings = settings_or_exit(config)
    from facteur.runtime import build_forge

    if build_forge(settings) is None:
        fail("no GitHub credentials: set GITHUB_TOKEN (github.token) or a GitHub App (github.app_id)", 2)
    from facteur.forge.github import GitHubForge

    forge = GitHubForge(settings.github, transport=transport)
    try:
        outcome = asyncio.run(_apply(forge, repo, issue, body, marker, dry_run=dry_run))
    except ForgeError as exc:
        fail(f"GitHub refused or failed: {exc.message}", 1)
    _log(outcome)
    if as_json:
        typer.echo(json.dumps(outcome))
        return
    for key in ("action", "comment_id", "comment_url", "marker_present"):
        typer.echo(f"{key}={outcome[key] if outcome[key] is not None else ''}")


async def _apply(
    forge: Forge, repo: str, issue: int, body: str, marker: str, *, dry_run: bool
) -> dict[str, Any]:
    try:
        existing = await forge.latest_comment_with(repo, issue, marker)
        outcome: dict[str, Any] = {
            "action": "update" if existing is not None else "create",
            "comment_id": None if existing is None else existing.id,
            "comment_url": None if existing is None else existing.url,
            "marker_present": 1,
            "dry_run": dry_run,
            "repository": repo,
            "issue": issue,
        }
        if dry_run:
            return outcome
        if existing is not None:
            written = await forge.update_comment(repo, existing.id, body)
        else:
            written = await forge.create_comment(repo, issue, body)
        outcome.update(comment_id=written.id, comment_url=written.url)
        return outcome
    finally:
        await forge.close()


def _read_body(body_file: Path | None) -> str:
    try:
        if body_file is not None:
            return body_file.read_text(encoding="utf-8")
        if sys.stdin.isatty():
            fail("give the body on stdin or with --body-file", 2)
        return sys.stdin.read()
    except UnicodeDecodeError as exc:
        fail(f"the body is not UTF-8 text: {exc}", 2)
    except OSError as exc:
        fail(f"cannot read {body_file}: {exc.strerror}", 2)


def _log(outcome: dict[str, Any]) -> None:
    path = next((os.environ[name] for name in LOG_ENV if os.environ.get(name)), None)
    if path is None:
        return
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    line = " ".join(f"{k}={v}" for k, v in outcome.items() if v is not None)
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{stamp} progress-comment {line}\n")
    except OSError as exc:
        fail(f"cannot append to the log {path}: {exc.strerror}", 1)
