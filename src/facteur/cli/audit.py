"""``facteur audit verify``: recompute the audit chain from the store and name the first broken link."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from facteur.cli.common import ConfigOption, JsonOption, err, fail, settings_or_exit, setup_logging
from facteur.errors import FacteurError

if TYPE_CHECKING:  # imported when the command runs: importing them slows every CLI start
    from facteur.domain.events import ChainBreak

app = typer.Typer(help="Check the append-only audit log.", no_args_is_help=True)

#: events read per page
PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None


@app.command("verify")
def verify(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Recompute every event's hash in order; exit 1 naming the first broken link."""
    import asyncio

    settings = settings_or_exit(config)
    setup_logging(settings)
    try:
        verdict = asyncio.run(_verify(settings.database.url, settings.database.timeout_seconds, not as_json))
    except FacteurError as exc:
        fail(exc.message)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "intact": verdict.broken is None,
                    "events": verdict.events,
                    "head": {"seq": verdict.head_seq, "hash": verdict.head_hash},
                    "broken": None
                    if verdict.broken is None
                    else {"seq": verdict.broken.seq, "reason": verdict.broken.reason},
                }
            )
        )
    elif verdict.broken is None:
        head = f"#{verdict.head_seq} {verdict.head_hash[:16]}"
        typer.echo(f"audit chain intact: {verdict.events} event(s), head {head}")
    else:
        typer.echo(
            f"audit chain broken at event #{verdict.broken.seq}: {verdict.broken.reason} "
            f"({verdict.events} event(s) verified before it)"
        )
    if verdict.broken is not None:
        raise typer.Exit(1)


async def _verify(url: str, wait_seconds: float, show_progress: bool) -> Verdict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from facteur.clock import SystemClock
    from facteur.domain.events import ChainVerifier
    from facteur.store.migrate import head_revision
    from facteur.store.sql import SqlStore

    store = SqlStore.open(url, clock=SystemClock(), timeout=wait_seconds)
    try:
        revision = await store.schema_revision()
        if revision != head_revision():
            raise FacteurError(
                f"the database is at schema revision {revision or 'none'}, not {head_revision()}: "
                "run `facteur migrate` first"
            )
        head_seq, head_hash = await store.chain_head()
        verifier = ChainVerifier()
        with Progress(
            TextColumn("verifying audit chain"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            disable=not show_progress or head_seq < PAGE,
            transient=True,
        ) as progress:
            bar = progress.add_task("events", total=head_seq)
            while True:
                page = await store.list_events(after_seq=verifier.last_seq, limit=PAGE)
                for event in page:
                    broken = verifier.feed(event)
                    if broken is not None:
                        return Verdict(verifier.last_seq, head_seq, head_hash, broken)
                progress.update(bar, completed=verifier.last_seq)
                if len(page) < PAGE:
                    break
        return Verdict(verifier.last_seq, head_seq, head_hash, verifier.finish(head_seq, head_hash))
    finally:
        await store.close()
