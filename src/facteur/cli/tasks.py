"""``facteur task retry|cancel``: act on one task of an idea on a running server (ids from
``facteur idea show``)."""

from __future__ import annotations

import typer

from facteur.cli.ideas import control_verb

app = typer.Typer(help="Retry or cancel one task of an idea.", no_args_is_help=True)
ID_HELP = "The task's id (facteur idea show lists them)."

control_verb(
    app, "retry", route="tasks", subject="task", done="retried",
    summary="Give a failed or blocked task a fresh set of attempts, at once.", id_help=ID_HELP,
)  # fmt: skip
control_verb(
    app, "cancel", route="tasks", subject="task", done="cancelled",
    summary="Cancel a task: its run in flight stops, the tasks depending on it block.", id_help=ID_HELP,
)  # fmt: skip
