"""Running an agent's process: its own process group, the prompt on stdin, output read as it comes, and
watchdogs (idle, grace after the final event, overall timeout) that kill the whole group.

The process is always reaped, and so is what it left behind in its group: on every way out (normal end,
a watchdog, the caller's cancellation) the group gets SIGTERM, then SIGKILL after ``terminate_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from facteur.agents.port import AgentError, AgentEvent, EventCallback, Timeouts
from facteur.agents.stream import Transcript

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
#: a longer line is counted as malformed and skipped
MAX_LINE_BYTES = 32 * 1024 * 1024
STDERR_TAIL_BYTES = 8 * 1024
_POLL_SECONDS = 0.02
#: environment of Facteur that an agent must not inherit (its settings and the run's token)
PRIVATE_ENV_PREFIXES = ("FACTEUR_",)


class Stop(StrEnum):
    """Why Facteur stopped the process."""

    IDLE = "idle"
    TOTAL = "total"
    #: it kept running (or kept its output open) past the grace period
    GRACE = "grace"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessEnd:
    returncode: int | None
    stop: Stop | None
    duration_seconds: float
    stderr_tail: str
    #: it ran on after its final event until it was terminated, or exited on its own after it
    final_at_seconds: float | None


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Facteur's environment without its private variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV_PREFIXES)}
    env.update(extra)
    return env


def check_workdir(path: Path) -> Path:
    if not path.is_dir():
        raise AgentError(f"the agent's working directory {path} does not exist")
    return path


async def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes,
    transcript: Transcript,
    timeouts: Timeouts,
    on_event: EventCallback | None = None,
    stdout_log: Path | None = None,
) -> ProcessEnd:
    """Run ``argv`` to its end, feeding each line of its standard output to ``transcript``."""
    supervisor = _Supervisor(transcript, timeouts, on_event)
    return await supervisor.run(argv, cwd=cwd, env=env, stdin=stdin, stdout_log=stdout_log)


class _Supervisor:
    def __init__(
        self,
        transcript: Transcript,
        timeouts: Timeouts,
        on_event: EventCallback | None,
    ) -> None:
        self._transcript = transcript
        self._timeouts = timeouts
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._last_output = self._started
        self._final_at: float | None = None
        self._exited_at: float | None = None
        self._changed = asyncio.Event()
        self._stderr = bytearray()
        self._log: IO[bytes] | None = None
        self._events: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self._dispatcher = (
            asyncio.create_task(_dispatch(self._events, on_event), name="facteur-agent-events")
            if on_event is not None
            else None
        )

    def _elapsed(self) -> float:
        return self._loop.time() - self._started

    def _publish(self, event: AgentEvent) -> None:
        if self._dispatcher is not None:
            self._events.put_nowait(event)

    async def run(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdin: bytes, stdout_log: Path | None
    ) -> ProcessEnd:
        try:
            if stdout_log is not None:
                try:
                    self._log = stdout_log.open("ab")
                except OSError as exc:
                    raise AgentError(
                        f"cannot write the agent transcript {stdout_log}: {exc.strerror}"
                    ) from None
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=dict(env),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise AgentError(f"cannot start the agent {argv[0]!r}: {exc.strerror or exc}") from None
            self._started = self._last_output = self._loop.time()
            logger.info("agent_started: pid=%s program=%s", process.pid, argv[0])
            end = await self._supervise(process, stdin)
        except BaseException:
            if self._dispatcher is not None:
                self._dispatcher.cancel()
            raise
        finally:
            if self._log is not None:
                self._log.close()
        if self._dispatcher is not None:
            # the caller sees every event before the result
            self._events.put_nowait(None)
            await self._dispatcher
        return end

    async def _supervise(self, process: asyncio.subprocess.Process, stdin: bytes) -> ProcessEnd:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        pgid = process.pid  # start_new_session: the child leads its own group
        helpers = [
            asyncio.create_task(_write(process.stdin, stdin)),
            asyncio.create_task(self._read_stdout(process.stdout)),
            asyncio.create_task(self._read_stderr(process.stderr)),
        ]
        output_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*helpers[1:]))
        exited: asyncio.Future[Any] = asyncio.ensure_future(process.wait())
        everything: list[asyncio.Future[Any]] = [*helpers, output_done, exited]
        stop: Stop | None = None
        try:
            stop = await self._watch(output_done, exited)
            if stop is not None:
                logger.warning("agent_stopped: pid=%s reason=%s", process.pid, stop.value)
        finally:
            try:
                await _terminate_group(process, pgid, self._timeouts.terminate_seconds)
            finally:
                for future in everything:
                    future.cancel()
                await asyncio.gather(*everything, return_exceptions=True)
        logger.info("agent_ended: pid=%s returncode=%s stop=%s", process.pid, process.returncode, stop)
        return ProcessEnd(
            returncode=process.returncode,
            stop=stop,
            duration_seconds=round(self._elapsed(), 3),
            stderr_tail=self._stderr.decode("utf-8", "replace"),
            final_at_seconds=None if self._final_at is None else round(self._final_at - self._started, 3),
        )

    # --- the watchdogs -----------------------------------------------------------------------------------

    async def _watch(self, output_done: asyncio.Future[Any], exited: asyncio.Future[Any]) -> Stop | None:
        while not (output_done.done() and exited.done()):
            now = self._loop.time()
            if exited.done() and self._exited_at is None:
                self._exited_at = now
            deadlines = self._deadlines()
            for when, stop in deadlines:
                if when <= now:
                    return stop
            wake = [when for when, _ in deadlines]
            self._changed.clear()
            changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
            waiting = {future for future in (output_done, exited) if not future.done()}
            try:
                await asyncio.wait(
                    {*waiting, changed},
                    timeout=max(0.0, min(wake) - now) if wake else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
        return None

    def _deadlines(self) -> list[tuple[float, Stop]]:
        """When each watchdog fires, the most important first."""
        timeouts = self._timeouts
        deadlines: list[tuple[float, Stop]] = []
        if timeouts.total_seconds > 0:
            deadlines.append((self._started + timeouts.total_seconds, Stop.TOTAL))
        if self._final_at is not None:
            deadlines.append((self._final_at + timeouts.grace_seconds, Stop.GRACE))
        elif self._exited_at is not None:
            # it exited but something it started holds its output open
            deadlines.append((self._exited_at + timeouts.grace_seconds, Stop.GRACE))
        elif timeouts.idle_seconds > 0:
            deadlines.append((self._last_output + timeouts.idle_seconds, Stop.IDLE))
        return deadlines

    # --- output ------------------------------------------------------------------------------------------

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        buffer = bytearray()
        skipping = False  # inside a line longer than MAX_LINE_BYTES
        while chunk := await stream.read(CHUNK_BYTES):
            self._last_output = self._loop.time()
            if self._log is not None:
                self._log.write(chunk)
                self._log.flush()
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if skipping:
                    skipping = False
                else:
                    self._line(line)
            if len(buffer) > MAX_LINE_BYTES:
                if not skipping:
                    self._transcript.lines += 1
                    self._transcript.malformed_line(buffer[:200].decode("utf-8", "replace") + "…")
                buffer.clear()
                skipping = True
        if buffer and not skipping:
            self._transcript.partial_final_line = True
            self._line(bytes(buffer))

    def _line(self, raw: bytes) -> None:
        final_before = self._transcript.final_seen
        text = raw.decode("utf-8", "replace").removesuffix("\r")
        try:
            events = self._transcript.feed(text, self._elapsed())
        except Exception:
            # a line this reader cannot make sense of must not end the run
            logger.exception("agent_line_unreadable")
            self._transcript.malformed_line(text)
            return
        for event in events:
            self._publish(event)
        if self._transcript.final_seen and not final_before:
            self._final_at = self._loop.time()
            self._changed.set()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(CHUNK_BYTES):
            self._last_output = self._loop.time()
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL_BYTES]


async def _write(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Give the prompt and close stdin; an agent that exits without reading it is not an error here."""
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def _dispatch(events: asyncio.Queue[AgentEvent | None], callback: EventCallback) -> None:
    while (event := await events.get()) is not None:
        try:
            await callback(event)
        except Exception:
            logger.exception("agent_event_callback_failed: kind=%s", event.kind.value)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: an orphan that died is reaped
    by init, and an init that does not reap (a container without one) must not make us wait."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _terminate_group(process: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL whatever is left after ``grace``; reap the process. Shielded from
    cancellation: the process is reaped whatever happens to the caller."""
    await asyncio.shield(_terminate(process, pgid, grace))


async def _terminate(process: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    loop = asyncio.get_running_loop()
    if process.returncode is None or _group_alive(pgid):
        if process.returncode is not None:
            logger.warning("agent_left_processes: pgid=%s", pgid)
        _signal_group(pgid, signal.SIGTERM)
        deadline = loop.time() + grace
        while (process.returncode is None or _group_alive(pgid)) and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), _POLL_SECONDS)
        if process.returncode is None or _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    await process.wait()
