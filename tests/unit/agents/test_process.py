"""Watchdogs and process handling shared by every backend: overall timeout, SIGKILL after SIGTERM, output
held open by a grandchild, callbacks, cancellation, and requests that cannot run."""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from facteur.agents import process
from facteur.agents.codex import CodexAgent, CodexTranscript
from facteur.agents.command import CommandAgent
from facteur.agents.port import AgentError, AgentEvent, AgentOutcome, AgentRequest, EventKind, Timeouts
from facteur.settings import AgentSettings
from tests.unit.agents.conftest import FakeAgent, gone


def python_agent(code: str) -> CommandAgent:
    """A command agent running a line of Python."""
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    return CommandAgent(AgentSettings(kind="command", command=command))


async def test_the_overall_timeout_stops_an_agent_that_keeps_talking(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=1.2, terminate_seconds=1)

    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_crash.jsonl", timeouts=timeouts, after="tick")
    )

    assert result.outcome is AgentOutcome.TIMED_OUT
    assert result.message == (
        "the agent ran longer than the overall timeout (1.2 s); its process group was killed"
    )
    assert result.stream.unknown_events["tick"] >= 3
    assert all(gone(pid) for pid in fake_agent.record()["pids"])


async def test_an_agent_that_ignores_sigterm_gets_sigkill(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=30, terminate_seconds=0.3)

    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_crash.jsonl", timeouts=timeouts, after="hang", ignore_term="1")
    )

    assert result.outcome is AgentOutcome.TIMED_OUT
    assert result.exit_code == -9
    assert all(gone(pid) for pid in fake_agent.record()["pids"])


async def test_output_held_open_by_a_grandchild_ends_after_the_grace(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=30, grace_seconds=0.3, total_seconds=30, terminate_seconds=1)

    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_normal.jsonl", timeouts=timeouts, child="hold")
    )

    assert result.outcome is AgentOutcome.SUCCEEDED
    assert "still running 0.3 s after its final event" in result.message
    assert result.exit_code == 0
    assert result.duration_seconds < 10
    assert all(gone(pid) for pid in fake_agent.record()["pids"])


async def test_leftover_processes_are_stopped_when_the_agent_exits(fake_agent: FakeAgent) -> None:
    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_normal.jsonl", child="1")
    )

    assert result.outcome is AgentOutcome.SUCCEEDED
    assert all(gone(pid) for pid in fake_agent.record()["pids"])


async def test_a_failing_callback_does_not_fail_the_run(
    fake_agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[AgentEvent] = []

    async def broken(event: AgentEvent) -> None:
        calls.append(event)
        raise RuntimeError("the callback server is down")

    with caplog.at_level(logging.ERROR, logger="facteur.agents.process"):
        result = await CodexAgent(fake_agent.settings("codex")).run(
            fake_agent.request("codex_normal.jsonl"), broken
        )

    assert result.outcome is AgentOutcome.SUCCEEDED
    assert len(calls) == len(result.events)
    assert "agent_event_callback_failed" in caplog.text


async def test_a_slow_callback_does_not_stall_the_agent(fake_agent: FakeAgent) -> None:
    seen: list[AgentEvent] = []

    async def slow(event: AgentEvent) -> None:
        await asyncio.sleep(0.1)
        seen.append(event)

    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=30, terminate_seconds=1)
    result = await CodexAgent(fake_agent.settings("codex")).run(
        fake_agent.request("codex_normal.jsonl", timeouts=timeouts), slow
    )

    # 12 events x 0.1 s of callback is longer than the idle timeout: reading went on meanwhile
    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert len(seen) == 12
    assert seen == list(result.events)


async def test_cancelling_the_run_kills_the_process_group(fake_agent: FakeAgent) -> None:
    started = asyncio.Event()

    async def on_event(event: AgentEvent) -> None:
        if event.kind is EventKind.SESSION:
            started.set()

    agent = CodexAgent(fake_agent.settings("codex"))
    run = asyncio.create_task(
        agent.run(fake_agent.request("codex_crash.jsonl", after="hang", child="1"), on_event)
    )
    await asyncio.wait_for(started.wait(), 20)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    pids = fake_agent.record()["pids"]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


async def test_an_agent_that_does_not_read_its_prompt(tmp_path: Path) -> None:
    agent = python_agent("print('no thanks')")

    result = await agent.run(AgentRequest(prompt="x" * 2_000_000, workdir=tmp_path))

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.final_message == "no thanks"


async def test_an_overlong_line_is_malformed_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(process, "CHUNK_BYTES", 256)
    agent = python_agent("import sys; sys.stdout.write('a' * 5000 + '\\nafter\\n')")

    result = await agent.run(AgentRequest(prompt="", workdir=tmp_path))

    assert result.stream.malformed_lines == 1
    assert result.stream.malformed_samples[0].startswith("aaaa")
    assert result.final_message == "after"


async def test_requests_that_cannot_run(fake_agent: FakeAgent, tmp_path: Path) -> None:
    missing = CodexAgent(AgentSettings(kind="codex", command=str(tmp_path / "no-such-codex")))
    with pytest.raises(AgentError, match="cannot start the agent"):
        await missing.run(AgentRequest(prompt="", workdir=tmp_path))

    agent = CodexAgent(fake_agent.settings("codex"))
    with pytest.raises(AgentError, match="does not exist"):
        await agent.run(AgentRequest(prompt="", workdir=tmp_path / "nowhere"))
    with pytest.raises(AgentError, match="invalid session id"):
        AgentRequest(prompt="", workdir=tmp_path, session_id="--last")
    with pytest.raises(AgentError, match="idle_seconds must be 0 or more"):
        Timeouts(idle_seconds=-1)


async def test_a_line_the_reader_chokes_on_is_counted_not_fatal(
    fake_agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: CodexTranscript, item: dict[str, Any], *, completed: bool) -> None:
        raise RuntimeError("a bug in the reader")

    monkeypatch.setattr(CodexTranscript, "_item", broken)

    result = await CodexAgent(fake_agent.settings("codex")).run(fake_agent.request("codex_normal.jsonl"))

    assert result.outcome is AgentOutcome.SUCCEEDED
    assert result.stream.malformed_lines == 12  # the item lines
    assert "agent_line_unreadable" in caplog.text
