"""``facteur codex-listen``: the codex-task listener in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

import typer

from facteur.bus import build_broker
from facteur.bus.codex_listener import CodexListener, DeadLetter, TaskSeen
from facteur.intake.codex_tasks import decode_task
from facteur.runtime import build_runtime
from facteur.settings import Settings

#: seconds a handler in progress may take to finish after a stop signal
STOP_GRACE_SECONDS = 10.0


async def listen(settings: Settings, *, dispatch: bool, as_json: bool, group: str | None) -> None:
    """Run until a stop signal; raise :class:`facteur.errors.FacteurError` when the listener fails."""
    # the runtime's own consumer would join the same group: this process is the listener
    settings = settings.model_copy(
        update={"bus": settings.bus.model_copy(update={"consume_codex_tasks": False})}
    )
    # with --dispatch, the whole runtime ingests what it reads; without, tasks are only decoded and checked
    runtime = await build_runtime(settings) if dispatch else None

    def on_task(seen: TaskSeen) -> None:
        typer.echo(json.dumps(seen.document()) if as_json else seen.line())

    def on_dead_letter(letter: DeadLetter) -> None:
        typer.echo(json.dumps(letter.document()) if as_json else letter.line())

    broker = build_broker(settings.bus)
    listener = CodexListener(
        broker,
        topic=settings.bus.topics.codex_tasks,
        group=group or settings.bus.codex_listener.group,
        decode=decode_task,
        receive=runtime.intake.receive if runtime is not None else None,
        on_task=on_task,
        on_dead_letter=on_dead_letter,
    )
    try:
        if runtime is not None:
            await runtime.start()
        await broker.start()
        await listener.start()
        await _run_until_signal(listener)
    finally:
        await listener.close()
        await broker.close()
        if runtime is not None:
            await runtime.close()


async def _run_until_signal(listener: CodexListener) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(listener.run(), name="codex-listen")
    stopping = asyncio.create_task(stop.wait(), name="codex-listen-signal")
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await listener.stop()
            await asyncio.wait({running}, timeout=STOP_GRACE_SECONDS)
        if not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        if not running.cancelled():
            running.result()  # the listener's failure, if that is what stopped it
    finally:
        stopping.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
