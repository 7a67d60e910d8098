"""``facteur idea submit|list|show|events|pause|resume|cancel|approve|plan``: the REST API v1 from the
command line, against a running server (``--url`` or ``FACTEUR_URL``, token from ``--token`` or
``FACTEUR_API_TOKEN``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from facteur.cli.common import JsonOption, err, fail

if TYPE_CHECKING:  # httpx and rich.table are imported when a command runs: they slow every CLI start
    import httpx

app = typer.Typer(help="Submit and follow ideas on a running Facteur.", no_args_is_help=True)
out = Console(soft_wrap=True)

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_SECONDS = 30.0

#: the HTTP transport to Facteur (``None``: the network); tests set an ``httpx.MockTransport``
transport: httpx.BaseTransport | None = None

UrlOption = Annotated[str, typer.Option("--url", envvar="FACTEUR_URL", help="Facteur's address.")]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="FACTEUR_API_TOKEN", help="API token.", show_default=False)
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")]
ByOption = Annotated[
    str,
    typer.Option("--by", envvar="FACTEUR_ACTOR", help="Who asks, as recorded in the audit log."),
]


def _call(method: str, path: str, url: str, token: str | None, **kwargs: Any) -> Any:
    import httpx

    base = url or DEFAULT_URL
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(
            base_url=base, headers=headers, timeout=TIMEOUT_SECONDS, transport=transport
        ) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach Facteur at {base}: {exc} (start it with `facteur serve`, or set --url)")
    try:
        body = response.json()
    except ValueError:
        fail(f"{method} {path}: {response.status_code} with a body that is not JSON")
    if response.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else body
        problems = body.get("problems") if isinstance(body, dict) else None
        error = body.get("error", "") if isinstance(body, dict) else ""
        lines = [f"{method} {path}: {response.status_code} {error}"]
        lines += [f"  - {p}" for p in problems] if problems else [f"  {detail}"]
        fail("\n".join(lines), 2 if response.status_code in {400, 404, 409, 422} else 1)
    return body


@app.command("submit")
def submit(
    *,
    title: Annotated[str, typer.Option(help="What the idea is, in a line.")],
    goal: Annotated[str, typer.Option(help="What success looks like.")],
    repository: Annotated[str, typer.Option(help="owner/repo")],
    constraints: Annotated[str, typer.Option(help="Limits the work must respect.")] = "",
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="A success metric (repeatable).")
    ] = None,
    priority: Annotated[int, typer.Option(min=0, max=3, help="0 highest … 3 lowest.")] = 2,
    risk: Annotated[list[str] | None, typer.Option("--risk", help="A risk label (repeatable).")] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="A plan file: markdown (docs/plans.md) or JSON ({tasks: [...]}).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes a retry find the first idea.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an idea (with its plan, if you have one)."""
    body: dict[str, Any] = {
        "title": title,
        "goal": goal,
        "repository": repository,
        "constraints": constraints,
        "success_metrics": metric or [],
        "priority": priority,
        "risk_labels": risk or [],
    }
    if plan is not None:
        body.update(_plan_body(plan))
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    idea = _call("POST", "/api/v1/ideas", url, token, json=body, headers=headers)
    if as_json:
        typer.echo(json.dumps(idea))
        return
    _show(idea)


@app.command("list")
def list_ideas(
    *,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Only these states (repeatable).")
    ] = None,
    repository: Annotated[str | None, typer.Option(help="Only this owner/repo.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Only this source (github_issue, discord, api, cli).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ideas, newest first."""
    from rich.table import Table

    params: list[tuple[str, str | int]] = [("limit", limit)]
    params += [("state", s) for s in state or []]
    if repository:
        params.append(("repository", repository))
    if source:
        params.append(("source", source))
    page = _call("GET", "/api/v1/ideas", url, token, params=params)
    if as_json:
        typer.echo(json.dumps(page))
        return
    table = Table("id", "state", "repository", "priority", "title", title=f"{len(page['items'])} idea(s)")
    for idea in page["items"]:
        paused = " (paused)" if idea["paused"] else ""
        _add(
            table,
            idea["id"][:8],
            idea["state"] + paused,
            idea["repository"],
            str(idea["priority"]),
            idea["title"],
        )
    out.print(table)
    if page["next_cursor"]:
        err.print("more ideas: raise --limit or filter")


@app.command("show")
def show(
    idea_id: Annotated[str, typer.Argument(help="The idea's id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """An idea with its plan, tasks, runs, approvals and cost."""
    idea = _call("GET", f"/api/v1/ideas/{idea_id}", url, token)
    if as_json:
        typer.echo(json.dumps(idea))
        return
    _show(idea)


@app.command("events")
def events(
    idea_id: Annotated[str, typer.Argument(help="The idea's id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The idea's audit timeline."""
    from rich.table import Table

    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = _call(
            "GET", f"/api/v1/ideas/{idea_id}/events", url, token, params={"after": after, "limit": 1000}
        )
        items.extend(page["items"])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    if as_json:
        typer.echo(json.dumps(items))
        return
    table = Table("seq", "at", "kind", "actor", "detail", title=f"{len(items)} event(s)")
    for event in items:
        _add(
            table,
            str(event["seq"]),
            event["at"][:19],
            event["kind"],
            event["actor"],
            _brief(event["payload"]),
        )
    out.print(table)


def act(path: str, body: dict[str, Any], *, url: str, token: str | None, as_json: bool, done: str) -> None:
    """POST a request about an idea or a task and show the idea it answers with."""
    idea = _call("POST", path, url, token, json=body)
    if as_json:
        typer.echo(json.dumps(idea))
        return
    out.print(done, highlight=False, markup=False)
    _show(idea)


def control_verb(
    group: typer.Typer,
    verb: str,
    *,
    route: str,
    subject: str,
    done: str,
    summary: str,
    id_help: str = "",
) -> None:
    """Register ``facteur <group> <verb> ID [--reason] [--by]``: ``POST /api/v1/<route>/ID/<verb>``, then the
    idea as the server answers it (these verbs differ only in their route and words)."""

    def command(
        subject_id: str = typer.Argument(
            ..., help=id_help or f"The {subject}'s id.", metavar=f"{subject.upper()}_ID", show_default=False
        ),
        *,
        reason: ReasonOption = None,
        by: ByOption = "cli",
        url: UrlOption = DEFAULT_URL,
        token: TokenOption = None,
        as_json: JsonOption = False,
    ) -> None:
        body = {"reason": reason, "by": by}
        act(f"/api/v1/{route}/{subject_id}/{verb}", body, url=url, token=token, as_json=as_json, done=done)

    command.__doc__ = summary
    group.command(verb)(command)


control_verb(
    app, "pause", route="ideas", subject="idea", done="paused",
    summary="Stop dispatching the idea's tasks (runs in flight finish).",
)  # fmt: skip
control_verb(
    app, "resume", route="ideas", subject="idea", done="resumed",
    summary="Dispatch the idea's ready tasks again.",
)  # fmt: skip
control_verb(
    app, "cancel", route="ideas", subject="idea", done="cancelled",
    summary="End the idea: open tasks cancelled, runs in flight stopped.",
)  # fmt: skip


@app.command("approve")
def approve(
    idea_id: Annotated[str, typer.Argument(help="The idea's id.")],
    *,
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject the plan instead (ends the idea).")
    ] = False,
    plan_version: Annotated[
        int | None,
        typer.Option("--plan-version", min=1, help="The version decided on (default: the latest)."),
    ] = None,
    reason: ReasonOption = None,
    by: ByOption = "cli",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve the plan of an idea awaiting approval (its tasks are built), or reject it."""
    body = {
        "decision": "reject" if reject else "approve",
        "plan_version": plan_version,
        "reason": reason,
        "by": by,
    }
    done = "plan rejected" if reject else "plan approved"
    act(f"/api/v1/ideas/{idea_id}/approvals", body, url=url, token=token, as_json=as_json, done=done)


@app.command("plan")
def plan_version(
    idea_id: Annotated[str, typer.Argument(help="The idea's id.")],
    plan: Annotated[
        Path,
        typer.Argument(
            help="Markdown (docs/plans.md) or JSON ({tasks: [...]}).", exists=True, dir_okay=False
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a new version of the idea's plan."""
    act(
        f"/api/v1/ideas/{idea_id}/plans",
        _plan_body(plan),
        url=url,
        token=token,
        as_json=as_json,
        done="plan version added",
    )


def _plan_body(plan: Path) -> dict[str, Any]:
    try:
        text = plan.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{plan} is not UTF-8 text: {exc}", 2)
    except OSError as exc:
        fail(f"cannot read {plan}: {exc.strerror}", 2)
    if plan.suffix.lower() != ".json":
        return {"plan": text}
    try:
        return {"plan_json": json.loads(text)}
    except json.JSONDecodeError as exc:
        fail(f"{plan} is not JSON: {exc}", 2)


def _show(idea: dict[str, Any]) -> None:
    from rich.table import Table

    paused = " (paused)" if idea["paused"] else ""
    out.print(f"[bold]{escape(idea['title'])}[/bold]  {idea['id']}", highlight=False)
    out.print(
        f"{idea['state']}{paused} · {idea['repository']} · priority {idea['priority']} · {idea['source']}",
        highlight=False,
        markup=False,
    )
    plan = idea["plan"]
    if plan:
        approval = "approved" if plan["approved"] else "not approved"
        out.print(
            f"plan v{plan['version']} ({approval}); versions {idea['plan_versions']}",
            highlight=False,
            markup=False,
        )
    cost = idea["cost"]
    out.print(
        f"cost: {cost['input_tokens']} in / {cost['output_tokens']} out tokens, ${cost['usd']:.2f}",
        highlight=False,
        markup=False,
    )
    if idea["tasks"]:
        tasks = Table("key", "state", "depends on", "heavy", "title", title="tasks")
        for task in idea["tasks"]:
            _add(
                tasks,
                task["key"],
                task["state"],
                ", ".join(task["depends_on"]) or "-",
                "yes" if task["heavy"] else "",
                task["title"],
            )
        out.print(tasks)
        # whole, one per line, outside the table: a narrow terminal must not cut what `facteur task` needs
        out.print("task ids:", highlight=False, markup=False)
        for task in idea["tasks"]:
            out.print(f"  {task['key']}  {task['id']}", highlight=False, markup=False, soft_wrap=True)
    if idea["runs"]:
        runs = Table("run", "stage", "status", "attempt", title="runs")
        for run in idea["runs"]:
            _add(runs, run["id"][:8], run["stage"], run["status"], str(run["attempt"]))
        out.print(runs)
    for approval in idea["approvals"]:
        out.print(
            f"approval: plan v{approval['plan_version']} {approval['decision']} by {approval['decided_by']}"
            f" ({approval['reason'] or 'no reason given'})",
            highlight=False,
            markup=False,
        )


def _brief(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    return text if len(text) <= 80 else text[:79] + "\u2026"


def _add(table: Any, *cells: str) -> None:
    """A row of plain text: titles and payloads from the server are never read as Rich markup."""
    from rich.text import Text

    table.add_row(*(Text(cell) for cell in cells))
