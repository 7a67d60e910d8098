"""The command backend: any executable; its exit status is the outcome, its output the final message."""

from __future__ import annotations

from facteur.agents.command import CommandAgent
from facteur.agents.port import AgentOutcome, CostSource, Timeouts
from tests.unit.agents.conftest import Events, FakeAgent, gone, same_dir


async def test_a_command_that_succeeds(fake_agent: FakeAgent) -> None:
    events = Events()
    agent = CommandAgent(fake_agent.settings("command", model="demo-1", extra_args="--plan 'two words'"))

    result = await agent.run(
        fake_agent.request("command_output.txt", session_id="earlier-1", env={"FACTEUR_STAGE": "implement"}),
        events,
    )

    assert result.outcome is AgentOutcome.SUCCEEDED, result.message
    assert result.final_message == "Reading the task...\nwrote notes.md\n\nDone: 1 file changed"
    assert events.kinds() == ["output", "output", "output"]
    assert result.session_id is None  # a command has no session to resume
    assert result.tool_calls == 0
    assert result.usage.cost_usd == 0
    assert result.usage.cost_source is CostSource.UNKNOWN
    record = fake_agent.record()
    assert record["argv"] == ["--plan", "two words"]
    assert record["prompt"] == "Fix the failing test in calc.py."
    assert same_dir(record["env"]["FACTEUR_AGENT_WORKDIR"], fake_agent.workdir)
    assert record["env"]["FACTEUR_AGENT_MODEL"] == "demo-1"
    assert record["env"]["FACTEUR_AGENT_SESSION_ID"] == "earlier-1"
    assert record["env"]["FACTEUR_STAGE"] == "implement"  # the request's context


async def test_a_non_zero_exit_fails(fake_agent: FakeAgent) -> None:
    result = await CommandAgent(fake_agent.settings("command")).run(
        fake_agent.request("command_output.txt", after="exit:3", stderr="notes.md: permission denied")
    )

    assert result.outcome is AgentOutcome.FAILED
    assert result.message == "the agent exited with status 3 (stderr: notes.md: permission denied)"
    assert result.exit_code == 3
    assert result.final_message.endswith("Done: 1 file changed")


async def test_death_by_a_signal_is_a_crash(fake_agent: FakeAgent) -> None:
    result = await CommandAgent(fake_agent.settings("command")).run(
        fake_agent.request("command_output.txt", after="signal")
    )

    assert result.outcome is AgentOutcome.CRASHED
    assert result.message == "the agent was killed by SIGKILL"


async def test_a_silent_command_times_out(fake_agent: FakeAgent) -> None:
    timeouts = Timeouts(idle_seconds=0.8, grace_seconds=10, total_seconds=30, terminate_seconds=1)

    result = await CommandAgent(fake_agent.settings("command")).run(
        fake_agent.request(timeouts=timeouts, after="hang", child="1")
    )

    assert result.outcome is AgentOutcome.TIMED_OUT
    assert all(gone(pid) for pid in fake_agent.record()["pids"])
    assert result.events == ()
