"""Ideas: the unit of work a person asks for."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class IdeaSource(StrEnum):
    GITHUB_ISSUE = "github_issue"
    DISCORD = "discord"
    API = "api"
    CLI = "cli"
    INCIDENT = "incident"


#: the sources whose ideas the orchestrator plans itself. Ideas from GitHub issues are planned through the
#: GitHub intake, as Froussard does; a Discord ``/plan`` names no repository and goes to the bus as a
#: ``CommandEvent``, as in the seeds; incidents come with remediation work of their own.
PLANNED_SOURCES: frozenset[IdeaSource] = frozenset({IdeaSource.API, IdeaSource.CLI})


class IdeaState(StrEnum):
    REGISTERED = "registered"
    PLANNING = "planning"
    PLAN_READY = "plan_ready"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_DEPENDENCIES = "awaiting_dependencies"
    RUNNING_TASKS = "running_tasks"
    QA_REVIEW = "qa_review"
    INTEGRATION = "integration"
    DEPLOYMENT = "deployment"
    MONITORING = "monitoring"
    REMEDIATION = "remediation"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Idea:
    id: uuid.UUID
    source: IdeaSource
    #: unique together with source, e.g. ``owner/repo#42``
    source_ref: str
    repository: str
    title: str
    priority: int
    state: IdeaState
    paused: bool
    initiator: str
    created_at: datetime
    updated_at: datetime
    #: the approved plan's version (None until one is approved)
    plan_version: int | None = None
    #: usage of its runs
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


#: a repository name, ``owner/name`` (GitHub's characters)
REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
_REPOSITORY = re.compile(REPOSITORY_PATTERN)


def is_repository(name: str) -> bool:
    """Whether ``name`` is ``owner/name``."""
    return _REPOSITORY.match(name) is not None


def github_issue_ref(repository: str, issue_number: int) -> str:
    """The source reference of a GitHub issue: ``owner/repo#42``."""
    return f"{repository}#{issue_number}"
