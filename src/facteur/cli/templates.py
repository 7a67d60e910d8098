"""``facteur templates render``: write the stage WorkflowTemplates, or check that a directory holds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facteur.cli.common import ConfigOption, JsonOption, err, fail, settings_or_exit
from facteur.errors import ConfigError

app = typer.Typer(no_args_is_help=True)


@app.callback()
def templates() -> None:
    """Argo WorkflowTemplates of the stages (docs/templates.md)."""


OutOption = Annotated[
    Path, typer.Option("--out", help="Directory of the rendered files.", file_okay=False, dir_okay=True)
]
CheckOption = Annotated[
    bool,
    typer.Option("--check", help="Write nothing; exit 1 naming the files that differ from a fresh render."),
]


@app.command("render")
def render(
    config: ConfigOption = None,
    out: OutOption = Path("deploy/argo"),
    check: CheckOption = False,
    as_json: JsonOption = False,
) -> None:
    """Render one WorkflowTemplate per stage (and the semaphore ConfigMap) from the settings."""
    from facteur.templates.files import check as check_files
    from facteur.templates.files import render_files, write

    settings = settings_or_exit(config)
    try:
        files = render_files(settings)
    except ConfigError as exc:
        fail(exc.message, 2)
    if check:
        results = check_files(out, files)
    else:
        try:
            results = write(out, files)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
    drift = [result for result in results if result.drift]
    if as_json:
        document = {
            "out": str(out),
            "check": check,
            "files": [{"file": r.name, "state": r.state.value} for r in results],
            "drift": [r.name for r in drift],
        }
        typer.echo(json.dumps(document, indent=2))
    elif check:
        for result in drift:
            err.print(f"drift: {out / result.name} {_why(result.state.value)}", highlight=False, markup=False)
        if not drift:
            typer.echo(f"{out}: {len(results)} files match a fresh render")
    else:
        for result in results:
            typer.echo(f"{result.state.value:<9} {out / result.name}")
    if drift:
        if not as_json:
            err.print(
                f"{len(drift)} file(s) in {out} differ from a fresh render: run "
                f"`facteur templates render --out {out}` and commit the result",
                highlight=False,
                markup=False,
            )
        raise typer.Exit(1)


def _why(state: str) -> str:
    return {
        "differs": "differs from a fresh render",
        "missing": "is missing",
        "stale": "is no longer rendered (stale)",
    }.get(state, state)
