"""Stages: what a run does."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """The stage a run executes (ARCHITECTURE.md §2, Run)."""

    PLANNING = "planning"
    IMPLEMENTATION = "implementation"
    REVIEW = "review"
    INTEGRATION = "integration"
    DEPLOYMENT = "deployment"
    MONITORING = "monitoring"
    REMEDIATION = "remediation"
