"""How a run went, from what the agent reported and how its process ended."""

from __future__ import annotations

import signal

from facteur.agents.port import AgentOutcome, AgentResult, Timeouts
from facteur.agents.pricing import PriceTable
from facteur.agents.process import ProcessEnd, Stop
from facteur.agents.stream import Transcript, one_line

Verdict = tuple[AgentOutcome, str]


def timed_out(end: ProcessEnd, timeouts: Timeouts) -> Verdict | None:
    if end.stop is Stop.TOTAL:
        return AgentOutcome.TIMED_OUT, (
            f"the agent ran longer than the overall timeout ({timeouts.total_seconds:g} s); "
            "its process group was killed"
        )
    if end.stop is Stop.IDLE:
        return AgentOutcome.TIMED_OUT, (
            f"no output from the agent for {timeouts.idle_seconds:g} s (idle timeout); "
            "its process group was killed"
        )
    return None


def event_verdict(end: ProcessEnd, transcript: Transcript, timeouts: Timeouts) -> Verdict:
    """For agents that end with a final event (codex, claude)."""
    if transcript.final_seen:
        if transcript.failed:
            return AgentOutcome.FAILED, f"the agent reported an error: {transcript.error or 'no details'}"
        if end.stop is Stop.GRACE:
            return AgentOutcome.SUCCEEDED, (
                f"the agent (or a process it started) was still running {timeouts.grace_seconds:g} s "
                "after its final event: terminated"
            )
        if end.stop is Stop.TOTAL:
            return AgentOutcome.SUCCEEDED, "the overall timeout ended the agent after its final event"
        if end.returncode != 0:
            return AgentOutcome.FAILED, f"the agent {exit_text(end.returncode)} after its final event" + (
                stderr_hint(end)
            )
        return AgentOutcome.SUCCEEDED, ""
    verdict = timed_out(end, timeouts)
    if verdict is not None:
        return verdict
    reported = f"; it reported: {transcript.error}" if transcript.error else ""
    return AgentOutcome.CRASHED, (
        f"the agent {exit_text(end.returncode)} before its final event{reported}{stderr_hint(end)}"
    )


def exit_verdict(end: ProcessEnd, timeouts: Timeouts) -> Verdict:
    """For command agents: the exit status is the outcome."""
    verdict = timed_out(end, timeouts)
    if verdict is not None:
        return verdict
    code = end.returncode
    if code == 0:
        return AgentOutcome.SUCCEEDED, ""
    if code is not None and code > 0:
        return AgentOutcome.FAILED, f"the agent {exit_text(code)}{stderr_hint(end)}"
    return AgentOutcome.CRASHED, f"the agent {exit_text(code)}{stderr_hint(end)}"


def exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def stderr_hint(end: ProcessEnd) -> str:
    lines = [line for line in end.stderr_tail.splitlines() if line.strip()]
    return f" (stderr: {one_line(lines[-1], 300)})" if lines else ""


def build_result(
    *,
    verdict: Verdict,
    transcript: Transcript,
    end: ProcessEnd,
    prices: PriceTable,
    model: str | None,
    session_id: str | None = None,
) -> AgentResult:
    outcome, message = verdict
    reported_model = transcript.model or model
    usage = prices.usage(
        model=reported_model,
        input_tokens=transcript.input_tokens,
        cached_input_tokens=transcript.cached_input_tokens,
        output_tokens=transcript.output_tokens,
        reported_cost=transcript.reported_cost,
    )
    return AgentResult(
        outcome=outcome,
        message=message,
        final_message=transcript.final_message,
        session_id=transcript.session_id or session_id,
        model=reported_model,
        tool_calls=transcript.tool_calls,
        usage=usage,
        events=tuple(transcript.events),
        stream=transcript.stats(),
        exit_code=end.returncode,
        duration_seconds=end.duration_seconds,
        stderr_tail=end.stderr_tail,
    )
