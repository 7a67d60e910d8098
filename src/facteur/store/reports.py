"""How a run's report changes the run: one rule for every store adapter."""

from __future__ import annotations

from typing import Any

from facteur.domain.lifecycle import RUN_TRANSITIONS
from facteur.domain.runs import Run
from facteur.store.port import RunReport


def report_changes(run: Run, report: RunReport) -> dict[str, Any]:
    """The run's columns a report changes (shared with the memory store, so both apply the same rules)."""
    changes: dict[str, Any] = {}
    if (
        report.status is not None
        and report.status != run.status
        and RUN_TRANSITIONS.allows(run.status, report.status)
    ):
        changes["status"] = report.status
        if report.status.terminal and run.finished_at is None:
            changes["finished_at"] = report.received_at
    if report.started and run.started_at is None:
        changes["started_at"] = report.received_at
    if report.heartbeat and (run.heartbeat_at is None or run.heartbeat_at < report.received_at):
        changes["heartbeat_at"] = report.received_at
    if report.tokens_in or report.tokens_out or report.cost_usd:
        changes["tokens_in"] = run.tokens_in + report.tokens_in
        changes["tokens_out"] = run.tokens_out + report.tokens_out
        changes["cost_usd"] = run.cost_usd + report.cost_usd
    for name in ("summary", "pull_request", "branch"):
        value = getattr(report, name)
        if value is not None:
            changes[name] = value
    if report.artifacts is not None:
        changes["artifacts"] = list(report.artifacts)
    return changes
