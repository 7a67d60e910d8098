"""The ``codex`` backend: ``codex exec --json``, the prompt on stdin, JSON Lines on stdout.

Events read: ``thread.started`` (``thread_id``: the session to resume), ``turn.started``,
``item.started``/``item.updated``/``item.completed`` (items ``agent_message``, ``reasoning``,
``command_execution``, ``file_change``, ``mcp_tool_call``, ``web_search``, ``todo_list``, ``error``),
``turn.completed`` (``usage``: ``input_tokens``, ``cached_input_tokens``, ``output_tokens``) and
``turn.failed`` (``error.message``) — the final events — and ``error``. A later run resumes with
``codex exec … resume <thread id> -``.
"""

from __future__ import annotations

from typing import Any

from facteur.agents.base import ProcessAgent
from facteur.agents.port import AgentRequest, EventKind
from facteur.agents.stream import JsonlTranscript, count, text_of

_ITEM_EVENTS = {"item.started", "item.updated", "item.completed"}


class CodexTranscript(JsonlTranscript):
    def handle(self, event: dict[str, Any]) -> bool:
        kind = event["type"]
        if kind == "thread.started":
            self.found_session(event.get("thread_id") or event.get("session_id"))
        elif kind == "turn.started":
            pass
        elif kind in _ITEM_EVENTS:
            item = event.get("item")
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                self._item(item, completed=kind == "item.completed")
            else:
                self.unknown(f"{kind} without an item")
        elif kind == "turn.completed":
            self._usage(event.get("usage"))
            self.final_seen = True
            self.emit(EventKind.FINAL, "turn.completed")
        elif kind == "turn.failed":
            self._usage(event.get("usage"))
            self.report_error(_message(event.get("error")) or "the turn failed")
            self.failed = self.final_seen = True
            self.emit(EventKind.FINAL, "turn.failed")
        elif kind == "error":
            self.report_error(text_of(event.get("message")) or "unspecified error")
        else:
            return False
        return True

    def _item(self, item: dict[str, Any], *, completed: bool) -> None:
        kind = item["type"]
        call_id = item.get("id")
        if kind == "agent_message":
            if completed:
                self.final_message = text_of(item.get("text"))
                self.emit(EventKind.MESSAGE, self.final_message)
        elif kind == "reasoning":
            pass
        elif kind == "command_execution":
            self.tool_call(call_id, "shell", text_of(item.get("command")))
        elif kind == "file_change":
            paths = [
                f"{text_of(change.get('kind'))} {text_of(change.get('path'))}".strip()
                for change in _list(item.get("changes"))
                if isinstance(change, dict)
            ]
            self.tool_call(call_id, "file_change", ", ".join(paths) or "files changed", paths=paths)
        elif kind == "mcp_tool_call":
            name = ".".join(part for part in (text_of(item.get("server")), text_of(item.get("tool"))) if part)
            self.tool_call(call_id, "mcp", name or "mcp tool call")
        elif kind == "web_search":
            self.tool_call(call_id, "web_search", text_of(item.get("query")))
        elif kind == "todo_list":
            todo = [
                {"text": text_of(entry.get("text")), "done": entry.get("completed") is True}
                for entry in _list(item.get("items"))
                if isinstance(entry, dict)
            ]
            done = sum(1 for entry in todo if entry["done"])
            self.emit(EventKind.TODO_LIST, f"{done}/{len(todo)} done", items=todo)
        elif kind == "error":
            self.report_error(text_of(item.get("message")) or "unspecified error")
        else:
            self.unknown(f"item {kind}")

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.add_usage(
                count(usage.get("input_tokens")),
                count(usage.get("cached_input_tokens")),
                count(usage.get("output_tokens")),
            )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return text_of(error.get("message"))
    return text_of(error)


class CodexAgent(ProcessAgent):
    kind = "codex"
    supports_resume = True
    default_program = "codex"

    def argv(self, request: AgentRequest) -> list[str]:
        settings = self.settings
        argv = [*self.program, "exec", "--json"]
        if settings.bypass_sandbox:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += [
                "--sandbox",
                settings.sandbox,
                "--config",
                f'approval_policy="{settings.approval_policy}"',
            ]
        if settings.model:
            argv += ["--model", settings.model]
        argv += settings.extra_args
        if request.session_id is not None:
            argv += ["resume", request.session_id]
        argv.append("-")  # the prompt is on stdin
        return argv

    def transcript(self) -> CodexTranscript:
        return CodexTranscript()
