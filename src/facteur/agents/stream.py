"""Reading an agent's output: what it reported so far, kept as it arrives.

A :class:`Transcript` is fed one line of standard output at a time and turns it into :class:`AgentEvent`s;
:class:`JsonlTranscript` decodes JSON Lines robustly: a line that is not a JSON object with a string
``type`` is counted and skipped, an event of an unknown type is counted and skipped, nothing is fatal.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from facteur.agents.port import AgentEvent, EventKind, StreamStats

MAX_EVENTS = 10_000
MAX_SAMPLES = 5
SAMPLE_CHARS = 200
#: a tool call's summary in its event is cut to this many characters
SUMMARY_CHARS = 500


class Transcript:
    """What an agent reported; subclasses read their backend's lines."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.final_message = ""
        #: the agent's final event was read
        self.final_seen = False
        #: the last error the agent reported (the final event's when it failed)
        self.error: str | None = None
        #: the final event reported a failure
        self.failed = False
        self.input_tokens = 0
        self.cached_input_tokens = 0
        self.output_tokens = 0
        #: the cost the agent reported itself, in USD
        self.reported_cost: float | None = None
        self.tool_calls = 0
        self._tool_ids: set[str] = set()
        self.events: list[AgentEvent] = []
        self._new: list[AgentEvent] = []
        self._elapsed = 0.0
        self.lines = 0
        self.malformed = 0
        self._samples: list[str] = []
        self._unknown: Counter[str] = Counter()
        self.partial_final_line = False
        self._dropped = 0

    # --- reading -----------------------------------------------------------------------------------------

    def feed(self, line: str, elapsed: float) -> list[AgentEvent]:
        """Read one line (without its newline); return the events it produced."""
        self._elapsed = elapsed
        self.lines += 1
        self.read(line)
        new, self._new = self._new, []
        return new

    def read(self, line: str) -> None:
        raise NotImplementedError

    def stats(self) -> StreamStats:
        return StreamStats(
            lines=self.lines,
            malformed_lines=self.malformed,
            malformed_samples=tuple(self._samples),
            unknown_events=dict(sorted(self._unknown.items())),
            partial_final_line=self.partial_final_line,
            events_dropped=self._dropped,
        )

    # --- for subclasses ----------------------------------------------------------------------------------

    def emit(self, kind: EventKind, text: str = "", **detail: Any) -> None:
        event = AgentEvent(kind=kind, text=text, elapsed_seconds=round(self._elapsed, 3), detail=detail)
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self._dropped += 1
        self._new.append(event)

    def malformed_line(self, line: str) -> None:
        self.malformed += 1
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(line.strip()[:SAMPLE_CHARS])

    def unknown(self, name: str) -> None:
        self._unknown[name[:100]] += 1

    def found_session(self, session_id: Any) -> None:
        if isinstance(session_id, str) and session_id and session_id != self.session_id:
            self.session_id = session_id
            self.emit(EventKind.SESSION, session_id)

    def tool_call(self, call_id: Any, tool: str, summary: str, **detail: Any) -> None:
        """Count a tool call once per id (an id seen again is the same call)."""
        if isinstance(call_id, str) and call_id:
            if call_id in self._tool_ids:
                return
            self._tool_ids.add(call_id)
        self.tool_calls += 1
        self.emit(EventKind.TOOL_CALL, one_line(summary, SUMMARY_CHARS), tool=tool, **detail)

    def add_usage(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.cached_input_tokens += cached_input_tokens
        self.output_tokens += output_tokens
        self.emit(
            EventKind.USAGE,
            input_tokens=input_tokens,
            cached_input_tokens=cached_input_tokens,
            output_tokens=output_tokens,
        )

    def report_error(self, message: str) -> None:
        self.error = message
        self.emit(EventKind.ERROR, message)


class JsonlTranscript(Transcript):
    """One JSON object per line, its kind in ``type``."""

    def read(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError:
            self.malformed_line(line)
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.malformed_line(line)
            return
        if not self.handle(event):
            self.unknown(event["type"])

    def handle(self, event: dict[str, Any]) -> bool:
        """Take in one event; False when its type is unknown."""
        raise NotImplementedError


def count(value: Any) -> int:
    """A token count from untrusted JSON: a non-negative integer, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
