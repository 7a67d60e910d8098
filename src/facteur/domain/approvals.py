"""When a plan waits for a person: the approval gate's rule (issue #5 §3). The policy engine of a later
release plugs into the same gate."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApprovalNeed:
    required: bool
    #: why, for the audit event
    reason: str


def approval_need(
    *,
    repository: str,
    risk_labels: Collection[str],
    required: bool,
    repositories: Mapping[str, bool],
    high_risk_labels: Collection[str],
) -> ApprovalNeed:
    """A plan waits when its idea carries a high-risk label, else when its repository (or, failing a
    repository setting, the global setting) requires approval."""
    risky = sorted({label.lower() for label in risk_labels} & {label.lower() for label in high_risk_labels})
    if risky:
        return ApprovalNeed(True, f"high-risk label(s): {', '.join(risky)}")
    per_repository = {name.casefold(): value for name, value in repositories.items()}
    if repository.casefold() in per_repository:
        if per_repository[repository.casefold()]:
            return ApprovalNeed(True, f"approvals.repositories says {repository} requires approval")
        return ApprovalNeed(False, f"approvals.repositories says {repository} needs no approval")
    if required:
        return ApprovalNeed(True, "approvals.required is true")
    return ApprovalNeed(False, "no approval required (approvals.required is false, no high-risk label)")
