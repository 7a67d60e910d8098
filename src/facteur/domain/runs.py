"""Runs: one execution of one stage, and the identity of its workflow."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from facteur.domain.stages import Stage


class RunStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.LOST}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: uuid.UUID
    idea_id: uuid.UUID
    task_id: uuid.UUID
    stage: Stage
    delivery_id: str
    status: RunStatus
    #: the executor kind that runs it (``argo``, ``local``, ``none``); None while it is not to be dispatched
    executor: str | None
    workflow_name: str | None
    namespace: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    #: which attempt of its task this run is
    attempt: int = 1
    # what the run reported through its callbacks
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    summary: str | None = None
    artifacts: list[Any] | None = None
    pull_request: str | None = None
    branch: str | None = None


_NAME_SAFE = re.compile(r"[^a-z0-9-]+")


def workflow_name(stage: Stage, run_id: uuid.UUID, created_at: datetime) -> str:
    """The deterministic workflow name of a run: ``codex-<stage>-<yyyymmdd-hhmmss>-<8 chars of run id>``.

    Deterministic so that submitting the same run twice meets the first workflow instead of a second one.
    """
    stamp = created_at.strftime("%Y%m%d-%H%M%S")
    stage_part = _NAME_SAFE.sub("-", stage.value.lower())
    return f"codex-{stage_part}-{stamp}-{run_id.hex[:8]}"
