"""The claude backend driven by recorded ``claude -p --output-format stream-json`` streams."""

from __future__ import annotations

import json

import pytest

from facteur.agents.claude import ClaudeAgent
from facteur.agents.port import AgentOutcome, CostSource, EventKind, Timeouts
from tests.unit.agents.conftest import Events, FakeAgent, gone, load_stream

SESSION = "5d1f7a0e-2c4b-4f8e-9a61-0b3c7d9e4f21"
PRICES = {"claude-sonnet-4-5": {"input_usd_per_million": 3.0, "output_usd_per_million": 15.0}}


async def test_a_normal_run(fake_agent: FakeAgent) -> None:
    events = Events()
    settings = fake_agent.settings("claude", prices=PRICES)

    result = await ClaudeAgent(settings).run(fake_agent.request("claude_normal.jsonl"), events)

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.session_id == SESSION
    assert result.model == "claude-sonnet-4-5-20250929"
    assert result.final_message == "Fixed add() in calc.py; both tests pass."
    assert result.tool_calls == 3
    calls = [event.text for event in result.events if event.kind is EventKind.TOOL_CALL]
    assert calls == [
        "Bash: python -m pytest -q",
        "Edit: /workspace/calc/calc.py",
        "Bash: python -m pytest -q",
    ]
    # the result's totals: input counts cache writes and reads
    assert result.usage.input_tokens == 18 + 6210 + 60560
    assert result.usage.cached_input_tokens == 60560
    assert result.usage.output_tokens == 410
    # the reported cost wins over the price table
    assert result.usage.cost_usd == 0.0421
    assert result.usage.cost_source is CostSource.REPORTED
    assert [event.kind for event in result.events][-2:] == [EventKind.USAGE, EventKind.FINAL]
    assert events.seen == list(result.events)
    assert result.stream.malformed_lines == 0
    assert result.stream.unknown_events == {}

    record = fake_agent.record()
    assert record["prompt"] == "Fix the failing test in calc.py."
    assert record["argv"] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
    ]


async def test_settings_and_resume_reach_the_command_line(fake_agent: FakeAgent) -> None:
    settings = fake_agent.settings(
        "claude",
        model="claude-sonnet-4-5",
        permission_mode="bypassPermissions",
        allowed_tools="Bash(git diff:*), Read, Edit",
        extra_args=["--max-turns", "30"],
    )
    request = fake_agent.request(
        "claude_normal.jsonl",
        prompt="Continue.",
        session_id=SESSION,
        expect_args=f'["--resume", "{SESSION}"]',
    )

    result = await ClaudeAgent(settings).run(request)

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert fake_agent.record()["argv"] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--allowedTools",
        "Bash(git diff:*),Read,Edit",
        "--model",
        "claude-sonnet-4-5",
        "--resume",
        SESSION,
        "--max-turns",
        "30",
    ]


async def test_an_error_result_fails_the_run(fake_agent: FakeAgent) -> None:
    result = await ClaudeAgent(fake_agent.settings("claude")).run(
        fake_agent.request("claude_error.jsonl", after="exit:1")
    )

    assert result.outcome is AgentOutcome.FAILED
    assert result.message == "the agent reported an error: error_max_turns"
    assert result.session_id == "7e2a9b31-4d5c-4a6f-8b70-9c1d2e3f4a5b"
    assert result.usage.cost_usd == 0.0123
    assert result.tool_calls == 1


async def test_without_a_reported_cost_the_price_table_prices_the_run(fake_agent: FakeAgent) -> None:
    lines = []
    for line in load_stream("claude_normal.jsonl"):
        event = json.loads(line)
        event.pop("total_cost_usd", None)
        lines.append(json.dumps(event))
    stream = fake_agent.stream("claude_no_cost.jsonl", lines)

    result = await ClaudeAgent(fake_agent.settings("claude", prices=PRICES)).run(fake_agent.request(stream))

    # priced by the reported model's longest prefix in the table
    expected = ((18 + 6210 + 60560) * 3.0 + 410 * 15.0) / 1_000_000
    assert result.usage.cost_usd == pytest.approx(expected)
    assert result.usage.cost_source is CostSource.PRICE_TABLE


async def test_malformed_lines_and_unknown_messages_are_counted(fake_agent: FakeAgent) -> None:
    result = await ClaudeAgent(fake_agent.settings("claude")).run(fake_agent.request("claude_noisy.jsonl"))

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.stream.malformed_lines == 3
    assert result.stream.malformed_samples == (
        "warning: terminal does not support colors",
        '{"type":"assistant","message":',
        '"just a string"',
    )
    assert result.stream.unknown_events == {"assistant block x_future_block": 1, "telemetry": 1}
    assert result.final_message == "Done."
    assert result.model == "claude-haiku-4-5"


async def test_a_crash_before_the_result_keeps_what_was_said(fake_agent: FakeAgent) -> None:
    stream = fake_agent.stream("claude_cut.jsonl", load_stream("claude_normal.jsonl")[:5])
    request = fake_agent.request(stream, after="exit:2", stderr="FATAL: out of memory")

    result = await ClaudeAgent(fake_agent.settings("claude", prices=PRICES)).run(request)

    assert result.outcome is AgentOutcome.CRASHED
    assert result.message == (
        "the agent exited with status 2 before its final event (stderr: FATAL: out of memory)"
    )
    assert result.session_id == SESSION
    assert result.final_message == "I'll run the tests first to see what fails."
    assert result.tool_calls == 2
    # no result: the usage of each message seen so far, each message once
    assert result.usage.input_tokens == (4 + 5120 + 11000) + (6 + 410 + 16120)
    assert result.usage.output_tokens == 96 + 151
    assert result.usage.cost_source is CostSource.PRICE_TABLE


async def test_a_hung_agent_times_out(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=30, terminate_seconds=1)
    stream = fake_agent.stream("claude_hung.jsonl", load_stream("claude_normal.jsonl")[:3])
    request = fake_agent.request(stream, timeouts=timeouts, after="hang", child="1")

    result = await ClaudeAgent(fake_agent.settings("claude")).run(request)

    assert result.outcome is AgentOutcome.TIMED_OUT
    assert "idle timeout" in result.message
    assert result.session_id == SESSION
    assert all(gone(pid) for pid in fake_agent.record()["pids"])
