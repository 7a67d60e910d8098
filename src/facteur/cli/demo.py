"""``facteur demo``: watch one idea go from planning to reviewed branches on this machine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from facteur.cli.common import JsonOption, err, fail
from facteur.errors import FacteurError


def demo(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where to put the demo (a new or empty directory); default a temporary one."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=10, help="Seconds the idea may take.")] = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Create a small project with failing tests, start an embedded Facteur (SQLite, local executor, local
    forge, the example agent) and carry one idea through planning, three tasks and review; exit 0 only if
    the idea completed and the project's tests pass on the last task's branch."""
    from facteur.demo.session import DemoOptions, run_demo

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    try:
        summary = asyncio.run(run_demo(DemoOptions(directory=directory, timeout_seconds=timeout), say))
    except FacteurError as exc:
        fail(exc.message)
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print(summary.to_json())
    if not summary.succeeded:
        fail(
            f"the demo did not succeed: the idea is {summary.state}, "
            f"the tests {'pass' if summary.tests_passed else 'fail'} on {summary.last_branch or 'no branch'}"
        )


def _print(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.rule("Facteur demo: summary")
    console.print(f"idea {data['idea_id']}: [bold]{data['state']}[/bold] in {data['elapsed_seconds']} s")
    plan = Table("task", "depends on", "state", title="plan")
    for task in data["plan"]:
        plan.add_row(task["key"], ", ".join(task["depends_on"]) or "-", task["state"])
    console.print(plan)
    runs = Table("stage", "task", "#", "status", "seconds", "agent s", "branch", "pull request", title="runs")
    for run in data["runs"]:
        runs.add_row(
            run["stage"],
            run["task"],
            str(run["attempt"]),
            run["status"],
            _num(run["seconds"]),
            _num(run["agent_seconds"]),
            run["branch"] or "",
            run["pull_request"] or "",
        )
    console.print(runs)
    pulls = Table("#", "head", "draft", "state", title="pull requests (local forge)")
    for pull in data["pull_requests"]:
        pulls.add_row(str(pull["number"]), pull["head"], "yes" if pull["draft"] else "no", pull["state"])
    console.print(pulls)
    console.print(f"branches: {', '.join(data['branches'])}")
    console.print(f"commits on {data['last_branch']} (not on main):")
    for commit in data["commits"]:
        console.print(f"  {commit}", markup=False, highlight=False)
    tests = data["tests"]
    console.print(
        f"tests on {data['last_branch']}: {'[green]pass[/green]' if tests['passed'] else '[red]fail[/red]'}"
    )
    events = data["events"]
    console.print(f"events: {events['total']} in the audit log")
    cost = data["cost"]
    console.print(f"cost: {cost}")
    console.print(f"orchestration overhead per stage: {data['overhead']}")
    console.print(f"everything is kept in {data['directory']} (remove it when done)", markup=False)


def _num(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"
