"""The Agent port: run a coding agent on a prompt in a working directory and say how it went.

An agent runs as a child process in its own process group. While it runs, each thing it reports (its
session id, messages, tool calls, usage, its final event) becomes an :class:`AgentEvent` handed to the
caller's callback, so that a stage can forward milestones (the stage keeps its run alive with its own
heartbeats, which cover its git and forge work too). When it ends, :class:`AgentResult` says whether it
succeeded, failed, timed out or crashed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from facteur.errors import FacteurError


class AgentError(FacteurError):
    """The agent could not be run (bad request, missing executable or working directory)."""


class AgentOutcome(StrEnum):
    #: the agent reported the end of its work without an error
    SUCCEEDED = "succeeded"
    #: the agent reported an error, or exited non-zero after its final event (command: non-zero exit)
    FAILED = "failed"
    #: no output for the idle timeout, or longer than the overall timeout: its process group was killed
    TIMED_OUT = "timed_out"
    #: the process ended before its final event (command: killed by a signal)
    CRASHED = "crashed"


class EventKind(StrEnum):
    #: the agent's session id is known (``text``); a later run may resume it
    SESSION = "session"
    #: a message of the agent (``text``)
    MESSAGE = "message"
    #: a tool call, shell command, file change, web search (``text`` summarises it; ``detail["tool"]``)
    TOOL_CALL = "tool_call"
    #: the agent's to-do list (``detail["items"]``: ``[{"text", "done"}]``)
    TODO_LIST = "todo_list"
    #: token usage reported (``detail``: ``input_tokens``, ``cached_input_tokens``, ``output_tokens``)
    USAGE = "usage"
    #: an error the agent reported (``text``); the run may go on
    ERROR = "error"
    #: the agent's final event (codex ``turn.completed``/``turn.failed``, claude ``result``)
    FINAL = "final"
    #: a line of a command agent's standard output (``text``)
    OUTPUT = "output"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent:
    kind: EventKind
    text: str = ""
    #: seconds since the process started
    elapsed_seconds: float = 0.0
    detail: Mapping[str, Any] = field(default_factory=dict)


EventCallback = Callable[[AgentEvent], Awaitable[None]]
"""Called with each event, in order, while the agent runs. Its errors are logged, never fatal; a slow
callback does not stall reading the agent's output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    #: no output (stdout or stderr) for this long: the process group is killed, outcome ``timed_out``;
    #: 0 disables. Applies until the agent's final event
    idle_seconds: float = 1800.0
    #: a process still running this long after its final event is terminated (the run keeps the final
    #: event's outcome)
    grace_seconds: float = 120.0
    #: the whole run may take this long, then its process group is killed; 0 disables
    total_seconds: float = 0.0
    #: between SIGTERM to the process group and SIGKILL
    terminate_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("idle_seconds", "grace_seconds", "total_seconds", "terminate_seconds"):
            if getattr(self, name) < 0:
                raise AgentError(f"{name} must be 0 or more")


SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    #: given to the agent on its standard input
    prompt: str
    #: where the agent works (it must exist)
    workdir: Path
    #: added to the agent's environment (which is Facteur's minus every ``FACTEUR_*`` variable)
    env: Mapping[str, str] = field(default_factory=dict)
    #: resume this session of the agent (codex and claude)
    session_id: str | None = None
    #: None: the agent's configured timeouts
    timeouts: Timeouts | None = None
    #: every line of the agent's standard output is appended to this file, as it arrives
    transcript: Path | None = None

    def __post_init__(self) -> None:
        if self.session_id is not None and not SESSION_ID.match(self.session_id):
            raise AgentError(
                f"invalid session id {self.session_id[:80]!r}: expected letters, digits, . _ : -"
            )


class CostSource(StrEnum):
    #: the agent reported its cost (claude's ``total_cost_usd``)
    REPORTED = "reported"
    #: tokens times the model's prices (``agent.prices``)
    PRICE_TABLE = "price_table"
    #: no cost reported and no price for the model: ``cost_usd`` is 0
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    #: every input token, cached ones included
    input_tokens: int = 0
    #: the part of ``input_tokens`` read from the prompt cache
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_source: CostSource = CostSource.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStats:
    """What reading the agent's output met."""

    #: lines of standard output read, blank ones included
    lines: int = 0
    #: lines that are not a JSON object with a string ``type`` (they are skipped)
    malformed_lines: int = 0
    #: the first few malformed lines, cut to 200 characters
    malformed_samples: tuple[str, ...] = ()
    #: events (or codex items) of a type this backend does not know, by type: skipped
    unknown_events: Mapping[str, int] = field(default_factory=dict)
    #: the output ended without a newline (the last line was still read)
    partial_final_line: bool = False
    #: events left out of the result past its cap (the callback saw them all)
    events_dropped: int = 0

    @property
    def unknown_total(self) -> int:
        return sum(self.unknown_events.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResult:
    outcome: AgentOutcome
    #: why, in a sentence, when the outcome is not ``succeeded`` (and notes such as a grace termination)
    message: str
    #: the agent's last message (command: its standard output)
    final_message: str
    #: the session to resume on a later attempt, when the agent reported one
    session_id: str | None
    model: str | None
    tool_calls: int
    usage: Usage
    #: everything the agent reported
    events: tuple[AgentEvent, ...]
    stream: StreamStats
    #: the process's exit status; negative: killed by that signal
    exit_code: int | None
    duration_seconds: float
    #: the end of its standard error (at most 8 KiB)
    stderr_tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome is AgentOutcome.SUCCEEDED


class Agent(Protocol):
    """A coding agent. Adapters raise :class:`AgentError` only when the agent cannot be started; how the
    run went is the result's ``outcome``."""

    @property
    def kind(self) -> str:
        """``codex``, ``claude`` or ``command``."""
        ...

    @property
    def supports_resume(self) -> bool:
        """Whether :attr:`AgentRequest.session_id` continues an earlier session."""
        ...

    async def run(self, request: AgentRequest, on_event: EventCallback | None = None) -> AgentResult:
        """Run the agent to its end; cancelling the call kills its process group."""
        ...
