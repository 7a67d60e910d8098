"""The warm stage host: Facteur's own stage runs (``facteur stage …``) forked from an interpreter that has
already imported the stage runner, instead of a fresh interpreter per run.

A fresh ``python -m facteur stage`` spends most of a second importing before it does anything; a run forked
from the host starts in milliseconds. The host is one ``python -m facteur.executors.stage_server`` process
(see there), started with the executor and spoken to over its stdin and stdout. Should it die, it is
started again for the next run; runs it started go on and are stopped through their process groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facteur.errors import ExecutorError
from facteur.executors.processes import alive

logger = logging.getLogger(__name__)

_START_SECONDS = 60.0


class HostedProcess:
    """A run forked by the host, with the ``pid``/``returncode``/``wait()`` of an asyncio subprocess."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def _exited(self, code: int) -> None:
        self.returncode = code
        if not self._ended.done():
            self._ended.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)


class StageHost:
    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._starts: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._runs: dict[int, HostedProcess] = {}
        self._early: dict[int, int] = {}
        self._pollers: set[asyncio.Task[None]] = set()
        self._closing = False

    async def warm(self) -> None:
        """Start the host now, so that the first run does not wait for its imports."""
        try:
            await self._running()
        except ExecutorError as exc:
            logger.warning("warm stage host not started, the next run will try again: %s", exc.message)

    async def start(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
    ) -> HostedProcess:
        """Fork a run of ``facteur <argv>`` (``argv[0]`` is ``stage``); raise :class:`ExecutorError` when the
        host cannot."""
        process = await self._running()
        request_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._starts[request_id] = answer
        line = json.dumps(
            {"id": request_id, "argv": list(argv), "cwd": str(cwd), "env": dict(env), "log": str(log)}
        )
        assert process.stdin is not None
        try:
            process.stdin.write(line.encode() + b"\n")
            await process.stdin.drain()
            reply = await asyncio.wait_for(answer, _START_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"the warm stage host did not start the run: {exc}") from None
        finally:
            self._starts.pop(request_id, None)
        if "pid" not in reply:
            raise ExecutorError(f"the warm stage host did not start the run: {reply.get('error', reply)}")
        hosted = HostedProcess(int(reply["pid"]))
        self._runs[hosted.pid] = hosted
        if hosted.pid in self._early:  # it ended before we heard of it
            hosted._exited(self._early.pop(hosted.pid))
            self._runs.pop(hosted.pid, None)
        return hosted

    async def aclose(self) -> None:
        self._closing = True
        process = self._process
        self._process = None
        if process is not None and process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for poller in list(self._pollers):
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _running(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                await self._spawn()
            assert self._process is not None
            assert self._ready is not None
            process, ready = self._process, self._ready
        try:
            await asyncio.wait_for(asyncio.shield(ready), _START_SECONDS)
        except TimeoutError:
            raise ExecutorError(f"the warm stage host was not ready within {_START_SECONDS:.0f} s") from None
        return process

    async def _spawn(self) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "facteur.executors.stage_server",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError(f"cannot start the warm stage host: {exc.strerror}") from None
        self._process = process
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(process, self._ready), name="facteur-stage-host-reader")
        logger.info("warm stage host started: pid=%s", process.pid)

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("warm stage host said something unreadable: %r", line[:200])
                continue
            if message.get("ready") and not ready.done():
                ready.set_result(None)
            elif "exit" in message:
                pid, code = int(message["pid"]), int(message["exit"])
                hosted = self._runs.pop(pid, None)
                if hosted is None:
                    self._early[pid] = code
                else:
                    hosted._exited(code)
            elif "id" in message:
                waiting = self._starts.get(int(message["id"]))
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
        code = await process.wait()
        problem = ExecutorError(f"the warm stage host exited with status {code}")
        if not ready.done():
            ready.set_exception(problem)
        for waiting in self._starts.values():
            if not waiting.done():
                waiting.set_exception(problem)
        # runs it started go on; their ends are no longer reported: fall back to polling their pids
        for hosted in list(self._runs.values()):
            poller = asyncio.create_task(_poll(hosted), name=f"facteur-stage-host-poll-{hosted.pid}")
            self._pollers.add(poller)
            poller.add_done_callback(self._pollers.discard)
        self._runs.clear()
        if self._closing:
            logger.info("warm stage host stopped: status=%s", code)
        else:
            logger.warning("warm stage host exited: status=%s", code)


async def _poll(hosted: HostedProcess) -> None:
    """Wait for a run whose host is gone. Its status went with the host, unless the run was re-parented to
    this process (Facteur as PID 1, or a subreaper): then it is reaped here."""
    while True:
        try:
            pid, status = os.waitpid(hosted.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        except ChildProcessError:  # not ours: gone, or a zombie its new parent will reap
            if not alive(hosted.pid):
                hosted._exited(-1)
                return
        else:
            if pid:
                hosted._exited(os.waitstatus_to_exitcode(status))
                return
        await asyncio.sleep(0.5)
