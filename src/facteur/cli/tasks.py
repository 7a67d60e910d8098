"""``facteur task retry|cancel``: act on one task of an idea on a running server (ids from
``facteur idea show``)."""

from __future__ import annotations

from typing import Annotated

import typer

from facteur.cli.common import JsonOption
from facteur.cli.ideas import DEFAULT_URL, ByOption, ReasonOption, TokenOption, UrlOption, act

app = typer.Typer(help="Retry or cancel one task of an idea.", no_args_is_help=True)


@app.command("retry")
def retry(
    task_id: Annotated[str, typer.Argument(help="The task's id (facteur idea show lists them).")],
    *,
    reason: ReasonOption = None,
    by: ByOption = "cli",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a failed or blocked task a fresh set of attempts, at once."""
    body = {"reason": reason, "by": by}
    act(f"/api/v1/tasks/{task_id}/retry", body, url=url, token=token, as_json=as_json, done="retried")


@app.command("cancel")
def cancel(
    task_id: Annotated[str, typer.Argument(help="The task's id (facteur idea show lists them).")],
    *,
    reason: ReasonOption = None,
    by: ByOption = "cli",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a task: its run in flight stops, the tasks depending on it block."""
    body = {"reason": reason, "by": by}
    act(f"/api/v1/tasks/{task_id}/cancel", body, url=url, token=token, as_json=as_json, done="cancelled")
