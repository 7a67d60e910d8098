"""``facteur stage <stage> --event FILE``: run one stage of a run inside its workflow (the executor calls
it; see docs/stages.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from facteur.cli.common import ConfigOption, JsonOption, fail, settings_or_exit, setup_logging
from facteur.errors import ConfigError, FacteurError


def stage(
    name: Annotated[str, typer.Argument(help="plan|planning, implement|implementation, or review.")],
    event: Annotated[Path, typer.Option("--event", help="The event file of the run.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one stage of a run inside its workflow (the executor calls this)."""
    import json

    from facteur.stages.event import InvalidEvent, load_event
    from facteur.stages.runner import STAGE_NAMES, run_stage

    wanted = STAGE_NAMES.get(name.lower())
    if wanted is None:
        fail(f"unknown stage {name!r}: expected one of {', '.join(STAGE_NAMES)}", 2)
    settings = settings_or_exit(config)
    setup_logging(settings)
    try:
        document = load_event(event)
    except InvalidEvent as exc:
        fail(exc.message, 2)
    if document.stage is not wanted:
        fail(f"the event is for the {document.stage.value} stage, not {wanted.value}", 2)
    try:
        succeeded, message = asyncio.run(run_stage(settings, document, cwd=Path.cwd()))
    except ConfigError as exc:
        fail(exc.message, 2)
    except FacteurError as exc:
        fail(exc.message)
    if as_json:
        typer.echo(json.dumps({"stage": wanted.value, "succeeded": succeeded, "summary": message}))
    elif succeeded:
        typer.echo(message)
    if not succeeded:
        fail(f"{wanted.value} failed: {message}")
