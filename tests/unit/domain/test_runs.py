"""Run identity."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from facteur.domain.runs import RunStatus, workflow_name
from facteur.domain.stages import Stage


def test_workflow_name_is_deterministic_and_valid_for_kubernetes() -> None:
    run_id = uuid.UUID("029739ef-75c3-4561-849f-f4373a69662b")
    created = datetime(2026, 11, 21, 13, 51, 52, tzinfo=UTC)
    name = workflow_name(Stage.PLANNING, run_id, created)
    assert name == "codex-planning-20261121-135152-029739ef"
    assert workflow_name(Stage.PLANNING, run_id, created) == name
    for stage in Stage:
        other = workflow_name(stage, run_id, created)
        assert len(other) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", other)


def test_different_runs_in_the_same_second_get_different_names() -> None:
    created = datetime(2026, 11, 21, 13, 51, 52, tzinfo=UTC)
    names = {workflow_name(Stage.REVIEW, uuid.uuid4(), created) for _ in range(200)}
    assert len(names) == 200


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (RunStatus.QUEUED, False),
        (RunStatus.SUBMITTED, False),
        (RunStatus.RUNNING, False),
        (RunStatus.SUCCEEDED, True),
        (RunStatus.FAILED, True),
        (RunStatus.CANCELLED, True),
        (RunStatus.TIMED_OUT, True),
        (RunStatus.LOST, True),
    ],
)
def test_terminal_statuses(status: RunStatus, terminal: bool) -> None:
    assert status.terminal is terminal
