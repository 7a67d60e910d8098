"""What every ``facteur`` command shares: the stderr console, failing with a message, loading settings,
logging, and the ``--config`` / ``--json`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from facteur.errors import ConfigError
from facteur.settings import Settings, load_settings
from facteur.telemetry import logging as facteur_logging

err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML configuration file (else FACTEUR_CONFIG_FILE).", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _error(message: str) -> None:
    """One ``error:`` line; the message is printed literally (``[b]`` or ``[/tmp]`` is not Rich markup)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)


def fail(message: str, code: int = 1) -> NoReturn:
    _error(message)
    raise typer.Exit(code)


def settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        for line in exc.message.splitlines():
            _error(line)
        raise typer.Exit(2) from None


def setup_logging(settings: Settings) -> None:
    facteur_logging.configure(settings.logging.level, settings.logging.format, settings.secrets())
