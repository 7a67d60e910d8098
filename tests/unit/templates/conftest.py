"""Helpers of the template tests. Settings are built directly, never read from the environment."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from facteur.domain.runs import workflow_name
from facteur.domain.stages import Stage
from facteur.executors.port import WorkflowRequest
from facteur.settings import Settings

RUN_ID = uuid.UUID("0123abcd-4567-89ef-0123-456789abcdef")
CREATED_AT = datetime(2026, 11, 21, 13, 46, 0, tzinfo=UTC)


def settings_with(**sections: dict[str, Any]) -> Settings:
    """Default settings changed by sections, e.g. ``settings_with(templates={"docker_sidecar": True})``."""
    return Settings.model_validate(sections)


def manifest_strings(value: object) -> list[str]:
    """Every key and string value of a manifest."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *manifest_strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in manifest_strings(item)]
    return []


def workflow_request(stage: Stage, event: dict[str, Any]) -> WorkflowRequest:
    """What the orchestrator hands the executor for a run of ``stage`` carrying ``event``."""
    return WorkflowRequest(
        run_id=RUN_ID,
        idea_id=uuid.UUID("11111111-2222-4333-8444-555555555555"),
        task_id=uuid.UUID("66666666-7777-4888-9999-aaaaaaaaaaaa"),
        stage=stage,
        name=workflow_name(stage, RUN_ID, CREATED_AT),
        created_at=CREATED_AT,
        event_body=json.dumps(event).encode(),
        raw_event=json.dumps({"body": event}).encode(),
        repository="proompteng/lab",
        issue_number=1636,
        head=str(event.get("head", "codex/issue-1636")),
        base="main",
    )
