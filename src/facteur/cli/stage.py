"""``facteur stage <stage> --event FILE``: run one stage of a run inside its workflow (the executor calls
it; see docs/stages.md). The work is :func:`facteur.stages.main.execute`, which the local executor's warm
stage host calls too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facteur.cli.common import ConfigOption, JsonOption


def stage(
    name: Annotated[
        str,
        typer.Argument(
            help="plan|planning, implement|implementation, review, or bootstrap (the checkout alone)."
        ),
    ],
    event: Annotated[Path, typer.Option("--event", help="The event file of the run.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one stage of a run inside its workflow (the executor calls this)."""
    from facteur.stages.main import execute

    code = execute(name, event, config=config, as_json=as_json)
    if code:
        raise typer.Exit(code)
