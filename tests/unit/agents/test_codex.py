"""The codex backend driven by recorded ``codex exec --json`` streams replayed by a fake executable."""

from __future__ import annotations

import pytest

from facteur.agents.codex import CodexAgent
from facteur.agents.port import AgentOutcome, CostSource, EventKind, Timeouts
from tests.unit.agents.conftest import STREAMS, Events, FakeAgent, gone, same_dir


async def test_a_normal_run(fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTEUR_SERVER__API_TOKEN", "not-for-agents")
    agent = CodexAgent(fake_agent.settings("codex"))
    events = Events()
    request = fake_agent.request(
        "codex_normal.jsonl",
        prompt="Fix the failing test in calc.py.\nÉtape 2.",
        env={"EXTRA_CONTEXT": "issue-42"},
    )

    result = await agent.run(request, events)

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.message == ""
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert result.final_message == "Fixed add() in calc.py; both tests pass."
    assert result.tool_calls == 4  # two commands, one file change, one web search
    assert result.usage.input_tokens == 24763
    assert result.usage.cached_input_tokens == 24448
    assert result.usage.output_tokens == 1122
    assert result.usage.cost_source is CostSource.UNKNOWN
    assert result.exit_code == 0
    assert result.stream.malformed_lines == 0
    assert result.stream.unknown_events == {}
    assert not result.stream.partial_final_line
    assert result.stream.lines == 15

    kinds = [event.kind for event in result.events]
    assert kinds[0] is EventKind.SESSION
    assert kinds[-2:] == [EventKind.USAGE, EventKind.FINAL]
    assert events.seen == list(result.events)  # the callback saw every event, in order
    calls = [event for event in result.events if event.kind is EventKind.TOOL_CALL]
    assert [call.detail["tool"] for call in calls] == ["shell", "file_change", "shell", "web_search"]
    assert calls[0].text == "bash -lc 'python -m pytest -q'"
    assert calls[1].text == "update calc.py"
    assert calls[3].text == "pytest approx floating point"
    todos = [event for event in result.events if event.kind is EventKind.TODO_LIST]
    assert [todo.text for todo in todos] == ["0/2 done", "1/2 done", "2/2 done"]
    assert todos[-1].detail["items"] == [
        {"text": "Fix add() in calc.py", "done": True},
        {"text": "Run the tests", "done": True},
    ]
    messages = [event.text for event in result.events if event.kind is EventKind.MESSAGE]
    assert messages == ["The test fails because add() subtracts; fixing it.", result.final_message]

    record = fake_agent.record()
    assert record["prompt"] == "Fix the failing test in calc.py.\nÉtape 2."
    assert record["argv"] == [
        "exec",
        "--json",
        "--sandbox",
        "workspace-write",
        "--config",
        'approval_policy="never"',
        "-",
    ]
    assert same_dir(record["cwd"], fake_agent.workdir)
    assert "FACTEUR_SERVER__API_TOKEN" not in record["env"]
    assert record["env"]["EXTRA_CONTEXT"] == "issue-42"


async def test_resume_passes_the_session_id(fake_agent: FakeAgent) -> None:
    settings = fake_agent.settings(
        "codex", model="gpt-5-codex", bypass_sandbox=True, extra_args="--skip-git-repo-check"
    )
    request = fake_agent.request(
        "codex_normal.jsonl",
        prompt="Continue.",
        session_id="0199a213-81c0-7800-8aa1-bbab2a035a53",
        expect_args='["resume", "0199a213-81c0-7800-8aa1-bbab2a035a53"]',
    )

    result = await CodexAgent(settings).run(request)

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert fake_agent.record()["argv"] == [
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--model",
        "gpt-5-codex",
        "--skip-git-repo-check",
        "resume",
        "0199a213-81c0-7800-8aa1-bbab2a035a53",
        "-",
    ]
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert result.model == "gpt-5-codex"


async def test_malformed_lines_and_unknown_events_are_counted_not_fatal(fake_agent: FakeAgent) -> None:
    result = await CodexAgent(fake_agent.settings("codex")).run(fake_agent.request("codex_noisy.jsonl"))

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.stream.malformed_lines == 4
    assert result.stream.malformed_samples[0] == "Reading prompt from stdin..."
    assert result.stream.malformed_samples[1] == "[1, 2, 3]"
    assert result.stream.unknown_events == {"item image_view": 1, "turn.progress": 1}
    assert result.stream.unknown_total == 2
    # the last line had no newline: it is still read, and it is the final event
    assert result.stream.partial_final_line
    assert result.usage.input_tokens == 1200
    assert result.final_message == "Tests pass."
    assert result.tool_calls == 1


async def test_a_crash_mid_stream(fake_agent: FakeAgent) -> None:
    request = fake_agent.request(
        "codex_crash.jsonl", after="exit:1", stderr="Error: stream disconnected before completion"
    )

    result = await CodexAgent(fake_agent.settings("codex")).run(request)

    assert result.outcome is AgentOutcome.CRASHED
    assert result.message == (
        "the agent exited with status 1 before its final event "
        "(stderr: Error: stream disconnected before completion)"
    )
    assert result.exit_code == 1
    assert result.session_id == "0199a214-0b6e-7d30-9f4e-5f1c0d2e7a10"  # a later attempt can resume it
    assert result.final_message == "Looking at the repository layout first."
    assert result.tool_calls == 1
    assert "stream disconnected" in result.stderr_tail


async def test_a_failed_turn(fake_agent: FakeAgent) -> None:
    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_failed.jsonl", after="exit:1")
    )

    assert result.outcome is AgentOutcome.FAILED
    assert result.message == "the agent reported an error: You've hit your usage limit. Try again later."
    errors = [event.text for event in result.events if event.kind is EventKind.ERROR]
    assert errors == ["Reconnecting... 1/5", "You've hit your usage limit. Try again later."]


async def test_a_hung_agent_is_killed_with_its_process_group(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=30, terminate_seconds=1)
    request = fake_agent.request("codex_crash.jsonl", timeouts=timeouts, after="hang", child="1")

    result = await CodexAgent(fake_agent.settings("codex")).run(request)

    assert result.outcome is AgentOutcome.TIMED_OUT
    assert result.message == (
        "no output from the agent for 0.8 s (idle timeout); its process group was killed"
    )
    assert result.exit_code is not None
    assert result.exit_code < 0  # killed by a signal
    pids = fake_agent.record()["pids"]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids), pids  # the agent and the grandchild it started
    assert result.duration_seconds < 10


async def test_an_agent_that_lingers_after_its_final_event_is_terminated(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=30, grace_seconds=0.3, total_seconds=30, terminate_seconds=1)
    request = fake_agent.request("codex_normal.jsonl", timeouts=timeouts, after="hang")

    result = await CodexAgent(fake_agent.settings("codex")).run(request)

    assert result.outcome is AgentOutcome.SUCCEEDED
    assert result.message == (
        "the agent (or a process it started) was still running 0.3 s after its final event: terminated"
    )
    assert result.final_message == "Fixed add() in calc.py; both tests pass."
    assert all(gone(pid) for pid in fake_agent.record()["pids"])
    assert result.duration_seconds < 10


async def test_cost_from_the_price_table(fake_agent: FakeAgent) -> None:
    settings = fake_agent.settings(
        "codex",
        model="gpt-5-codex",
        prices={
            "gpt-5": {
                "input_usd_per_million": 1.25,
                "cached_input_usd_per_million": 0.125,
                "output_usd_per_million": 10.0,
            },
            "*": {"input_usd_per_million": 100.0, "output_usd_per_million": 100.0},
        },
    )

    result = await CodexAgent(settings).run(fake_agent.request("codex_normal.jsonl"))

    # (24763 - 24448) * 1.25 + 24448 * 0.125 + 1122 * 10, per million
    assert result.usage.cost_usd == pytest.approx(0.01466975)
    assert result.usage.cost_source is CostSource.PRICE_TABLE


async def test_the_transcript_keeps_every_line(fake_agent: FakeAgent) -> None:
    transcript = fake_agent.tmp_path / "events.jsonl"

    await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_noisy.jsonl", transcript=transcript)
    )

    # byte for byte what the agent printed, malformed lines and the unterminated last line included
    assert transcript.read_text() == (STREAMS / "codex_noisy.jsonl").read_text()
