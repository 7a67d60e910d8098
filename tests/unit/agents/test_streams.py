"""Reading the backends' streams line by line, without a process."""

from __future__ import annotations

import json

from facteur.agents.claude import ClaudeTranscript
from facteur.agents.codex import CodexTranscript
from facteur.agents.command import OutputTranscript
from facteur.agents.port import EventKind
from facteur.agents.stream import MAX_SAMPLES, count, one_line
from tests.unit.agents.conftest import load_stream


def feed(transcript: CodexTranscript | ClaudeTranscript, lines: list[str]) -> None:
    for number, line in enumerate(lines):
        transcript.feed(line, elapsed=number / 10)


def test_codex_recorded_stream() -> None:
    transcript = CodexTranscript()
    feed(transcript, load_stream("codex_normal.jsonl"))

    assert transcript.final_seen
    assert not transcript.failed
    assert transcript.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert transcript.tool_calls == 4
    assert (transcript.input_tokens, transcript.cached_input_tokens, transcript.output_tokens) == (
        24763,
        24448,
        1122,
    )
    assert transcript.events[0].elapsed_seconds == 0.0
    assert transcript.events[-1].elapsed_seconds == 1.4


def test_codex_turns_add_up_their_usage() -> None:
    transcript = CodexTranscript()
    usage = {"input_tokens": 10, "cached_input_tokens": 4, "output_tokens": 2}
    feed(transcript, [json.dumps({"type": "turn.completed", "usage": usage})] * 2)

    assert (transcript.input_tokens, transcript.cached_input_tokens, transcript.output_tokens) == (20, 8, 4)


def test_codex_items_with_missing_or_odd_fields() -> None:
    transcript = CodexTranscript()
    feed(
        transcript,
        [
            '{"type":"item.completed"}',
            '{"type":"item.completed","item":{"id":"a","type":"file_change","changes":"not a list"}}',
            '{"type":"item.completed","item":{"id":"b","type":"mcp_tool_call","server":"github","tool":"pr"}}',
            '{"type":"item.completed","item":{"id":"c","type":"error","message":"sandbox denied"}}',
            '{"type":"turn.completed","usage":{"input_tokens":-5,"cached_input_tokens":true,"output_tokens":"7"}}',
        ],
    )

    assert transcript.stats().unknown_events == {"item.completed without an item": 1}
    calls = [event.text for event in transcript.events if event.kind is EventKind.TOOL_CALL]
    assert calls == ["files changed", "github.pr"]
    assert transcript.error == "sandbox denied"
    assert not transcript.failed  # an error item does not end the turn
    assert (transcript.input_tokens, transcript.cached_input_tokens, transcript.output_tokens) == (0, 0, 0)


def test_claude_recorded_stream() -> None:
    transcript = ClaudeTranscript()
    feed(transcript, load_stream("claude_normal.jsonl"))

    assert transcript.final_seen
    assert transcript.reported_cost == 0.0421
    assert transcript.model == "claude-sonnet-4-5-20250929"
    usage = [event for event in transcript.events if event.kind is EventKind.USAGE]
    assert len(usage) == 1  # the result's totals, once
    assert usage[0].detail == {"input_tokens": 66788, "cached_input_tokens": 60560, "output_tokens": 410}


def test_claude_error_results_name_their_errors() -> None:
    transcript = ClaudeTranscript()
    feed(
        transcript,
        [
            json.dumps(
                {
                    "type": "result",
                    "subtype": "error_during_execution",
                    "is_error": True,
                    "session_id": "s-1",
                    "errors": ["API Error: 529 overloaded"],
                }
            )
        ],
    )

    assert transcript.failed
    assert transcript.error == "error_during_execution: API Error: 529 overloaded"
    assert transcript.session_id == "s-1"
    assert transcript.reported_cost is None


def test_claude_tool_input_summaries() -> None:
    transcript = ClaudeTranscript()
    blocks = [
        {"type": "tool_use", "id": "t1", "name": "Grep", "input": {"pattern": "def add", "path": "src"}},
        {"type": "tool_use", "id": "t2", "name": "TodoWrite", "input": {"todos": [{"content": "x"}]}},
        {"type": "tool_use", "id": "t1", "name": "Grep", "input": {"pattern": "def add"}},  # same id
    ]
    feed(transcript, [json.dumps({"type": "assistant", "message": {"id": "m", "content": blocks}})])

    calls = [event.text for event in transcript.events if event.kind is EventKind.TOOL_CALL]
    assert calls == ["Grep: def add", 'TodoWrite: {"todos": [{"content": "x"}]}']
    assert transcript.tool_calls == 2


def test_malformed_samples_are_capped_and_cut() -> None:
    transcript = CodexTranscript()
    feed(transcript, ["x" * 500] * (MAX_SAMPLES + 3))

    stats = transcript.stats()
    assert stats.malformed_lines == MAX_SAMPLES + 3
    assert len(stats.malformed_samples) == MAX_SAMPLES
    assert len(stats.malformed_samples[0]) == 200


def test_plain_output_keeps_blank_lines_inside_the_message() -> None:
    transcript = OutputTranscript()
    for line in ["", "first", "", "second", ""]:
        transcript.feed(line, elapsed=0)

    assert transcript.final_message == "first\n\nsecond"
    assert [event.text for event in transcript.events] == ["first", "second"]


def test_helpers() -> None:
    assert [count(v) for v in (3, 2.0, -1, True, "4", None)] == [3, 2, 0, 0, 0, 0]
    assert one_line("a\n  b\tc", 10) == "a b c"
    assert one_line("abcdefghij", 5) == "abcd…"
