"""The ``local`` executor: each run is a subprocess in its own directory under ``executor.local.workdir``.

A run's directory holds ``event.json`` (the event handed to the stage runner), ``run.log`` (its stdout and
stderr) and ``state.json`` (queued/running/finished, pid, exit status, times), so its status survives a
restart of Facteur. At most ``max_concurrency`` processes run at once; the rest wait in submission order.
The command is split like a shell line once, then each argument is filled in (``{stage}``, ``{event_file}``,
``{run_id}``, ``{workdir}``): user text never reaches a shell. Facteur's own stage runner (a command starting
with ``facteur``) inherits Facteur's environment, since it reads the same settings (it keeps them from the
agent it runs); any other command gets the environment without Facteur's ``FACTEUR_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from facteur.clock import Clock
from facteur.errors import ConfigError, ExecutorError
from facteur.executors.port import Submission, WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus
from facteur.executors.processes import alive
from facteur.executors.stage_host import StageHost
from facteur.settings import LocalExecutorSettings

logger = logging.getLogger(__name__)

StatusListener = Callable[[str, WorkflowStatus], Awaitable[None]]
"""Called with (run id, status) whenever a local workflow starts or ends."""

_PLACEHOLDERS = {"stage", "event_file", "run_id", "workdir"}
_TERMINATE_GRACE_SECONDS = 5.0
#: environment of Facteur itself that a stage process must not inherit (its settings carry secrets)
_PRIVATE_ENV_PREFIXES = ("FACTEUR_",)


def parse_command(template: str) -> list[str]:
    """Split and check the command template; raise :class:`ConfigError` naming the problem."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise ConfigError(f"invalid setting executor.local.command: {exc}") from None
    if not argv:
        raise ConfigError("invalid setting executor.local.command: it is empty")
    sample = dict.fromkeys(_PLACEHOLDERS, "x")
    for arg in argv:
        try:
            arg.format_map(sample)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"invalid setting executor.local.command: bad placeholder in {arg!r} ({exc}); "
                f"use {', '.join('{' + p + '}' for p in sorted(_PLACEHOLDERS))}"
            ) from None
    return argv


class _Process(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


@dataclass
class _Live:
    process: _Process
    cancelled: bool = False


class LocalExecutor:
    kind = "local"
    namespace = "local"

    def __init__(
        self,
        settings: LocalExecutorSettings,
        *,
        clock: Clock,
        listener: StatusListener | None = None,
        stage_env: Mapping[str, str] | None = None,
        terminate_seconds: float = _TERMINATE_GRACE_SECONDS,
    ) -> None:
        self._argv = parse_command(settings.command)
        #: between SIGTERM and SIGKILL to a run's process group: longer than a stage runner needs to stop
        #: its agent (``agent.terminate_seconds``), whose process group is its own
        self._terminate_seconds = terminate_seconds
        #: Facteur's own stage runner (``facteur stage …``) gets Facteur's environment and these variables
        #: (absolute paths of the settings it shares with the server); any other command gets neither
        self._own = self._argv[0] == "facteur"
        self._stage_env = dict(stage_env or {})
        self._host: StageHost | None = None
        if self._own and self._argv[1:2] == ["stage"] and settings.warm_stage_host:
            self._host = StageHost()
        self._workdir = settings.workdir.resolve()
        self._concurrency = settings.max_concurrency
        self._clock = clock
        self._listener = listener
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._live: dict[str, _Live] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def set_listener(self, listener: StatusListener) -> None:
        self._listener = listener

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover the runs of a previous process, then start the workers."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self._host is not None:
            self._workers.append(asyncio.create_task(self._host.warm(), name="facteur-stage-host"))
        for state_file in sorted(self._workdir.glob("*/state.json"), key=_mtime):
            state = _read_json(state_file)
            if state is None:
                continue
            name = state_file.parent.name
            if state.get("state") == "queued":
                self._queue.put_nowait(name)
            elif state.get("state") == "running" and not alive(state.get("pid")):
                self._finish(name, state, "lost", message="the process ended while Facteur was not running")
        for index in range(self._concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"facteur-local-executor-{index}"))

    async def warmed(self) -> None:
        """Return once the warm stage host (when there is one) is ready, or could not start."""
        if self._host is not None:
            await self._host.warm()

    async def aclose(self) -> None:
        self._closing = True
        for worker in self._workers:
            worker.cancel()
        for name, live in list(self._live.items()):
            await self._terminate(name, live)
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()
        if self._host is not None:
            await self._host.aclose()

    # --- the port ------------------------------------------------------------------------------------------

    async def submit(self, request: WorkflowRequest) -> Submission:
        ref = WorkflowRef(self.kind, self.namespace, request.name)
        run_dir = self._run_dir(request.name)
        state_file = run_dir / "state.json"
        existing = _read_json(state_file)
        if existing is not None:
            if existing.get("run_id") != str(request.run_id):
                raise ExecutorError(f"local workflow {request.name} belongs to run {existing.get('run_id')}")
            return Submission(ref, created=False)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "event.json").write_bytes(request.event_body)
            (run_dir / "raw-event.bin").write_bytes(request.raw_event)
            _write_json(
                state_file,
                {
                    "run_id": str(request.run_id),
                    "stage": request.stage.value,
                    "state": "queued",
                    "queued_at": _iso(self._clock.now()),
                    "log": str(run_dir / "run.log"),
                },
            )
        except OSError as exc:
            raise ExecutorError(f"cannot prepare {run_dir}: {exc.strerror}") from exc
        await self._queue.put(request.name)
        return Submission(ref, created=True)

    async def status(self, ref: WorkflowRef) -> WorkflowStatus:
        state = _read_json(self._run_dir(ref.name) / "state.json")
        if state is None:
            return WorkflowStatus(phase=WorkflowPhase.NOT_FOUND)
        # a process this executor watches is reported by its watcher when it ends: an exited pid whose end
        # is not recorded yet is not lost
        return _status(state, check_pid=ref.name not in self._live)

    async def cancel(self, ref: WorkflowRef) -> None:
        live = self._live.get(ref.name)
        if live is not None:
            live.cancelled = True
            await self._terminate(ref.name, live)
            return
        state_file = self._run_dir(ref.name) / "state.json"
        state = _read_json(state_file)
        if state is not None and state.get("state") == "queued":
            self._finish(ref.name, state, "cancelled", message="cancelled before it started")
            await self._notify(state)

    # --- internals -----------------------------------------------------------------------------------------

    def _run_dir(self, name: str) -> Path:
        if "/" in name or name in {"", ".", ".."}:
            raise ExecutorError(f"invalid workflow name {name!r}")
        return self._workdir / name

    def log_file(self, name: str) -> Path:
        return self._run_dir(name) / "run.log"

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            try:
                await self._execute(name)
            except Exception:
                logger.exception("local run failed to execute: workflow=%s", name)
            finally:
                self._queue.task_done()

    def _argv_for(self, name: str, state: dict[str, Any]) -> list[str]:
        values = {
            "stage": state["stage"],
            "event_file": str(self._run_dir(name) / "event.json"),
            "run_id": state["run_id"],
            "workdir": str(self._run_dir(name)),
        }
        argv = [arg.format_map(values) for arg in self._argv]
        if argv[0] == "facteur":
            # run this installation's CLI, whatever PATH says
            argv = [sys.executable, "-m", "facteur", *argv[1:]]
        return argv

    async def _execute(self, name: str) -> None:
        run_dir = self._run_dir(name)
        state_file = run_dir / "state.json"
        state = _read_json(state_file)
        if state is None or state.get("state") != "queued" or self._closing:
            return
        argv = self._argv_for(name, state)
        if self._own:
            env = {**os.environ, **self._stage_env}
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV_PREFIXES)}
        env.update(
            FACTEUR_RUN_ID=state["run_id"],
            FACTEUR_STAGE=state["stage"],
            FACTEUR_EVENT_FILE=str(run_dir / "event.json"),
            FACTEUR_WORKFLOW_NAME=name,
        )
        process: _Process
        try:
            if self._host is not None:
                # argv is [python, -m, facteur, stage, ...]: the host runs what follows "facteur"
                process = await self._host.start(argv[3:], cwd=run_dir, env=env, log=run_dir / "run.log")
            else:
                with (run_dir / "run.log").open("ab") as log:
                    process = await asyncio.create_subprocess_exec(
                        *argv,
                        cwd=run_dir,
                        env=env,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
        except OSError as exc:
            self._finish(name, state, "failed", message=f"cannot start {argv[0]}: {exc.strerror}")
            await self._notify(state)
            return
        except ExecutorError as exc:
            self._finish(name, state, "failed", message=exc.message)
            await self._notify(state)
            return
        live = _Live(process)
        self._live[name] = live
        state.update(state="running", pid=process.pid, started_at=_iso(self._clock.now()), argv=argv)
        _write_json(state_file, state)
        logger.info("local run started: workflow=%s pid=%s", name, process.pid)
        await self._notify(state)
        try:
            code = await process.wait()
        finally:
            self._live.pop(name, None)
        if live.cancelled:
            outcome, message = "cancelled", "cancelled"
        elif self.closing:
            outcome, message = "lost", "Facteur stopped while the run was in progress"
        elif code == 0:
            outcome, message = "succeeded", ""
        else:
            outcome, message = "failed", f"exited with status {code}"
        self._finish(name, state, outcome, message=message, exit_code=code)
        logger.info("local run finished: workflow=%s outcome=%s exit_code=%s", name, outcome, code)
        await self._notify(state)

    def _finish(
        self, name: str, state: dict[str, Any], outcome: str, *, message: str, exit_code: int | None = None
    ) -> None:
        state.update(state=outcome, message=message, finished_at=_iso(self._clock.now()))
        if exit_code is not None:
            state["exit_code"] = exit_code
        _write_json(self._run_dir(name) / "state.json", state)

    async def _terminate(self, name: str, live: _Live) -> None:
        process = live.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._terminate_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        logger.info("local run terminated: workflow=%s", name)

    async def _notify(self, state: dict[str, Any]) -> None:
        if self._listener is None:
            return
        try:
            # our own transition: the process may already have exited, which must not read as "lost"
            await self._listener(state["run_id"], _status(state, check_pid=False))
        except Exception:
            logger.exception("local run status listener failed: run=%s", state.get("run_id"))


_PHASES = {
    "queued": WorkflowPhase.PENDING,
    "running": WorkflowPhase.RUNNING,
    "succeeded": WorkflowPhase.SUCCEEDED,
    "failed": WorkflowPhase.FAILED,
    "lost": WorkflowPhase.LOST,
    "cancelled": WorkflowPhase.CANCELLED,
}


def _status(state: dict[str, Any], *, check_pid: bool = True) -> WorkflowStatus:
    phase = _PHASES.get(str(state.get("state")), WorkflowPhase.FAILED)
    if check_pid and phase is WorkflowPhase.RUNNING and not alive(state.get("pid")):
        phase = WorkflowPhase.LOST
        state = {**state, "message": "the process is gone"}
    details: dict[str, str] = {k: str(state[k]) for k in ("pid", "exit_code", "state", "log") if k in state}
    return WorkflowStatus(
        phase=phase,
        message=str(state.get("message", "")),
        started_at=_parse(state.get("started_at")),
        finished_at=_parse(state.get("finished_at")),
        details=details,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("unreadable local run state: path=%s error=%s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _iso(value: datetime) -> str:
    return value.isoformat()


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
