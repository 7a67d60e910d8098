"""The stage runner's entry point, shared by ``facteur stage`` and the local executor's warm stage host.

It imports no CLI framework, so that a run forked from a preloaded interpreter starts in milliseconds.
Exit status: 0 the stage did its work, 1 it did not (the last line on stderr says why), 2 the event file or
the settings cannot be used, 143 the run was stopped (SIGTERM: the agent's process group is killed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from facteur.errors import ConfigError, FacteurError
from facteur.settings import Settings, load_settings
from facteur.stages.event import InvalidEvent, StageEvent, load_event
from facteur.stages.runner import STAGE_NAMES, run_stage
from facteur.telemetry import logging as facteur_logging

STOPPED = 128 + signal.SIGTERM


def execute(name: str, event: Path, *, config: Path | None = None, as_json: bool = False) -> int:
    """Run one stage as ``facteur stage <name> --event <event>`` does; return the exit status."""
    wanted = STAGE_NAMES.get(name.lower())
    if wanted is None:
        return _error(f"unknown stage {name!r}: expected one of {', '.join(STAGE_NAMES)}", 2)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for line in exc.message.splitlines():
            _error(line, 2)
        return 2
    facteur_logging.configure(settings.logging.level, settings.logging.format, settings.secrets())
    try:
        document = load_event(event)
    except InvalidEvent as exc:
        return _error(exc.message, 2)
    if document.stage is not wanted:
        return _error(f"the event is for the {document.stage.value} stage, not {wanted.value}", 2)
    try:
        outcome = asyncio.run(_stoppable(settings, document))
    except ConfigError as exc:
        return _error(exc.message, 2)
    except FacteurError as exc:
        return _error(exc.message, 1)
    if outcome is None:
        return _error(f"{wanted.value} stopped: SIGTERM", STOPPED)
    succeeded, message = outcome
    if as_json:
        print(json.dumps({"stage": wanted.value, "succeeded": succeeded, "summary": message}))
    elif succeeded:
        print(message)
    if not succeeded:
        return _error(f"{wanted.value} failed: {message}", 1)
    return 0


async def _stoppable(settings: Settings, document: StageEvent) -> tuple[bool, str] | None:
    """The stage, cancelled on SIGTERM (cancelling the agent's run kills its process group); None when it
    was stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await run_stage(settings, document, cwd=Path.cwd())
    except asyncio.CancelledError:
        if stopped:
            return None
        raise


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m facteur.stages.main <stage> --event FILE [--config FILE] [--json]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="facteur stage", description="Run one stage of a run.")
    parser.add_argument("stage")
    parser.add_argument("--event", required=True, type=Path)
    parser.add_argument("--config", "-c", type=Path, default=None)
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    return execute(args.stage, args.event, config=args.config, as_json=args.as_json)


if __name__ == "__main__":
    sys.exit(main())
