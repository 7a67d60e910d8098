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
#: ``facteur stage bootstrap``: the checkout alone
BOOTSTRAP = "bootstrap"


def execute(name: str, event: Path, *, config: Path | None = None, as_json: bool = False) -> int:
    """Run one stage as ``facteur stage <name> --event <event>`` does; return the exit status."""
    checkout_only = name.lower() == BOOTSTRAP
    wanted = STAGE_NAMES.get(name.lower())
    if wanted is None and not checkout_only:
        names = ", ".join((BOOTSTRAP, *STAGE_NAMES))
        return _error(f"unknown stage {name!r}: expected one of {names}", 2)
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
    if checkout_only:
        return _checkout(settings, document, as_json=as_json)
    assert wanted is not None
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


def _checkout(settings: Settings, document: StageEvent, *, as_json: bool) -> int:
    """``facteur stage bootstrap``: only the checkout the event's stage would start from, in
    ``stage.workspace`` (``repo/`` here); nothing is reported to Facteur."""
    from facteur.stages.bootstrap import bootstrap
    from facteur.stages.forges import git_auth, open_forge
    from facteur.stages.git import Git

    async def run() -> dict[str, object]:
        forge = open_forge(settings, document.repository)
        try:
            stage = settings.stage
            workspace = (stage.workspace or Path.cwd() / "repo").resolve()
            git = Git(
                workspace,
                auth=await git_auth(forge, document.repository),
                timeout_seconds=stage.git_timeout_seconds,
                user_name=stage.git_user_name,
                user_email=stage.git_user_email,
            )
            head = document.base if document.stage.value == "planning" else document.head
            checkout = await bootstrap(
                git,
                remote=forge.remote,
                base=document.base,
                head=head,
                dependencies=[d.branch for d in document.dependencies],
            )
        finally:
            await forge.forge.close()
        return {
            "workspace": str(workspace),
            "head": checkout.head,
            "sha": checkout.sha,
            "started_from": checkout.started_from.value,
            "merged": list(checkout.merged),
            "missing": list(checkout.missing),
            "cloned": checkout.cloned,
        }

    try:
        done = asyncio.run(run())
    except ConfigError as exc:
        return _error(exc.message, 2)
    except FacteurError as exc:  # git's failures included
        return _error(f"bootstrap failed: {exc.message}", 1)
    if as_json:
        print(json.dumps(done))
    else:
        print(f"{done['workspace']}: {done['head']} at {str(done['sha'])[:12]}, from {done['started_from']}")
    return 0


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
