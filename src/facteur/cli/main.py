"""``facteur``: serve, migrate, inspect configuration, run stages."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from facteur import __version__
from facteur.cli.audit import app as audit_app
from facteur.cli.common import ConfigOption, JsonOption, fail, settings_or_exit, setup_logging
from facteur.cli.demo import demo
from facteur.cli.discord import app as discord_app
from facteur.cli.discord_channel import discord_channel
from facteur.cli.ideas import app as idea_app
from facteur.cli.progress import progress_comment
from facteur.cli.stage import stage
from facteur.cli.tasks import app as task_app
from facteur.cli.templates import app as templates_app
from facteur.errors import ConfigError, FacteurError

app = typer.Typer(
    name="facteur",
    help="Facteur: a self-hosted autonomous delivery system for coding agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(discord_app, name="discord")
app.add_typer(audit_app, name="audit")
app.add_typer(idea_app, name="idea")
app.add_typer(task_app, name="task")
app.add_typer(templates_app, name="templates")
app.command("progress-comment")(progress_comment)
app.command("discord-channel")(discord_channel)
app.command("stage")(stage)
app.command("demo")(demo)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides server.port).")] = None,
) -> None:
    """Run the HTTP API, intake and dispatch in this process."""
    import uvicorn

    from facteur.app import create_app

    settings = settings_or_exit(config)
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if overrides:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})
    exposure = settings.exposure_problem()
    if exposure is not None:
        fail(exposure, code=2)
    setup_logging(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, freeze_gc=True, config_path=config),
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    if not server.started:
        raise typer.Exit(1)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply database migrations and exit."""
    from facteur.clock import SystemClock
    from facteur.settings import mask_url
    from facteur.store.sql import SqlStore

    settings = settings_or_exit(config)
    setup_logging(settings)
    store = SqlStore.open(
        settings.database.url, clock=SystemClock(), timeout=settings.database.timeout_seconds
    )
    try:
        before, after = store.migrate()
    except FacteurError as exc:
        fail(exc.message)
    finally:
        store.dispose()
    where = mask_url(settings.database.url)
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: migrated from {before or 'an empty database'} to {after}")


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets masked)."""
    settings = settings_or_exit(config)
    data = settings.redacted()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for section, values in data.items():
        typer.echo(f"[{section}]")
        for key, value in _flatten(values):
            typer.echo(f"  {key} = {json.dumps(value)}")


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


@app.command("codex-listen")
def codex_listen(
    config: ConfigOption = None,
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch", help="Ingest each task like POST /codex/tasks (record it, submit planning)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per message.")] = False,
    group: Annotated[
        str | None, typer.Option("--group", help="Consumer group (overrides bus.codex_listener.group).")
    ] = None,
) -> None:
    """Consume CodexTask messages from bus.topics.codex_tasks and print one line per message."""
    import asyncio
    import logging

    from facteur.cli.codex_listen import listen

    settings = settings_or_exit(config)
    if settings.bus.kind != "kafka":
        fail("codex-listen reads from Kafka: set bus.kind: kafka and bus.kafka.brokers", 2)
    setup_logging(settings)
    if settings.logging.level != "DEBUG":  # its connection errors repeat ours, once per retry
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(listen(settings, dispatch=dispatch, as_json=as_json, group=group))
    except ConfigError as exc:
        fail(exc.message, 2)
    except FacteurError as exc:
        fail(exc.message)


@app.command()
def version(as_json: JsonOption = False) -> None:
    """Print the version."""
    if as_json:
        typer.echo(json.dumps({"version": __version__}))
    else:
        typer.echo(f"facteur {__version__}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
