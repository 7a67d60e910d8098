"""The ``claude`` backend: ``claude -p --output-format stream-json --verbose``, the prompt on stdin.

Messages read: ``system`` (subtype ``init``: ``session_id``, ``model``), ``assistant`` (content blocks
``text``, ``tool_use``, ``thinking``; ``usage`` per message), ``user`` (``tool_result`` blocks),
``stream_event`` (partial messages, ignored) and the final ``result`` (``subtype``, ``is_error``,
``result``, ``session_id``, ``usage``, ``total_cost_usd``). A later run resumes with ``--resume <id>``.
"""

from __future__ import annotations

import json
from typing import Any

from facteur.agents.base import ProcessAgent
from facteur.agents.port import AgentRequest, EventKind
from facteur.agents.stream import JsonlTranscript, count, text_of

#: the input field that best says what a tool call does, in order of preference
_SUMMARY_FIELDS = ("command", "file_path", "pattern", "url", "query", "path", "description", "prompt")


class ClaudeTranscript(JsonlTranscript):
    def __init__(self) -> None:
        super().__init__()
        #: usage per API message (a message's content blocks may arrive as several events)
        self._message_usage: dict[str, tuple[int, int, int]] = {}

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event["type"]
        if kind not in {"system", "assistant", "user", "stream_event", "result"}:
            return False
        self.found_session(event.get("session_id"))
        if kind == "system" and event.get("subtype") == "init":
            model = text_of(event.get("model"))
            self.model = model or self.model
        elif kind == "assistant":
            self._assistant(event.get("message"))
        elif kind == "result":
            self._result(event)
        return True

    def _assistant(self, message: Any) -> None:
        if not isinstance(message, dict):
            self.unknown("assistant without a message")
            return
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            kind = text_of(block.get("type"))
            if kind == "text":
                text = text_of(block.get("text"))
                if text:
                    self.final_message = text
                    self.emit(EventKind.MESSAGE, text)
            elif kind == "tool_use":
                name = text_of(block.get("name")) or "tool"
                self.tool_call(block.get("id"), name, f"{name}: {_summary(block.get('input'))}")
            elif kind not in {"thinking", "redacted_thinking"}:
                self.unknown(f"assistant block {kind}")
        usage = message.get("usage")
        if isinstance(usage, dict) and not self.final_seen:
            key = text_of(message.get("id")) or str(len(self._message_usage))
            self._message_usage[key] = _tokens(usage)
            # until the result gives the totals, the sum over messages stands in for them
            self.input_tokens = sum(u[0] for u in self._message_usage.values())
            self.cached_input_tokens = sum(u[1] for u in self._message_usage.values())
            self.output_tokens = sum(u[2] for u in self._message_usage.values())

    def _result(self, event: dict[str, Any]) -> None:
        subtype = text_of(event.get("subtype")) or "result"
        result = event.get("result")
        if isinstance(result, str) and result:
            self.final_message = result
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = self.cached_input_tokens = self.output_tokens = 0
            self.add_usage(*_tokens(usage))
        cost = event.get("total_cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            self.reported_cost = float(cost)
        if event.get("is_error") is True or subtype != "success":
            errors = event.get("errors")
            detail = result if isinstance(result, str) and result else ""
            if not detail and isinstance(errors, list):
                detail = "; ".join(str(error) for error in errors)
            self.report_error(f"{subtype}: {detail}" if detail else subtype)
            self.failed = True
        self.final_seen = True
        self.emit(EventKind.FINAL, subtype, num_turns=count(event.get("num_turns")))


def _tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(input with cache writes and reads, cache reads, output)."""
    cached = count(usage.get("cache_read_input_tokens"))
    total_input = count(usage.get("input_tokens")) + count(usage.get("cache_creation_input_tokens")) + cached
    return total_input, cached, count(usage.get("output_tokens"))


def _summary(tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    for name in _SUMMARY_FIELDS:
        if isinstance(tool_input.get(name), str):
            return str(tool_input[name])
    return json.dumps(tool_input, sort_keys=True, default=str)


class ClaudeAgent(ProcessAgent):
    kind = "claude"
    supports_resume = True
    default_program = "claude"

    def argv(self, request: AgentRequest) -> list[str]:
        settings = self.settings
        argv = [*self.program, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", settings.permission_mode]
        if settings.allowed_tools:
            argv += ["--allowedTools", ",".join(settings.allowed_tools)]
        if settings.model:
            argv += ["--model", settings.model]
        if request.session_id is not None:
            argv += ["--resume", request.session_id]
        argv += settings.extra_args
        return argv

    def transcript(self) -> ClaudeTranscript:
        return ClaudeTranscript()
