"""GitHub intake: the path of ``POST /webhooks/github`` (the role Froussard plays in the seeds).

A verified delivery is looked up in the inbox first (a redelivery answers ``duplicate`` and does nothing),
then routed by :mod:`facteur.intake.github_triggers`. A stage trigger goes through the same ingest path as
``POST /codex/tasks`` (idea, task, run and events in one transaction) with its messages (JSON task,
protobuf task, raw body) in the outbox of that transaction; anything else is recorded with its reason and
the raw body. GitHub calls (placeholder plan comment, reaction, review context) go through the Forge port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from facteur.bus.port import Message
from facteur.clock import Clock
from facteur.domain import codex_task, prompts
from facteur.domain.events import NewEvent
from facteur.domain.idea_spec import InvalidIdeaSpec, is_idea_spec, parse_idea_spec, render_spec_problems
from facteur.domain.ideas import IdeaSource, IdeaState, github_issue_ref
from facteur.domain.plans import InvalidPlan, parse_plan
from facteur.domain.review_context import (
    ReviewContext,
    issue_number_from_branch,
    review_dedupe_key,
)
from facteur.domain.stages import Stage
from facteur.domain.untrusted import (
    PLAN_MARKER,
    PLANNING_PLACEHOLDER_COMMENT,
    is_placeholder,
)
from facteur.errors import Conflict, ForgeError, ForgeNotFound
from facteur.forge.port import Forge, Reaction
from facteur.forge.review import fetch_review_context
from facteur.intake.codex_tasks import DELIVERY_SOURCE as CODEX_TASK_SOURCE
from facteur.intake.codex_tasks import CodexTaskIntake, IdeaDetails
from facteur.intake.github_delivery import WebhookDelivery
from facteur.intake.github_messages import raw_message, task_key, task_messages
from facteur.intake.github_pulls import PullActivityHandler
from facteur.intake.github_specs import SpecComments
from facteur.intake.github_triggers import (
    Decision,
    Ignored,
    ImplementationTrigger,
    IssueRef,
    PlanComment,
    PlanningTrigger,
    PullActivity,
    ReviewTrigger,
    branch_name,
    decide,
    normalize_login,
)
from facteur.orchestrator.intent import intent_message
from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb
from facteur.settings import CodexSettings, GitHubSettings, TopicSettings
from facteur.store.port import Delivery, DeliveryIds, IngestEffects, IngestIds, Store

logger = logging.getLogger(__name__)

DELIVERY_SOURCE = "github"
REVIEW_SOURCE = "github_review"
ACTOR = "intake:github"
_WEBHOOK_FIELDS = ("status", "deliveryId", "event", "action", "codexStageTriggered")
_ID_FIELDS = ("ideaId", "taskId", "runId", "workflowName", "reason")
_TRIGGERED = {
    Stage.PLANNING: "planning",
    Stage.IMPLEMENTATION: "implementation",
    Stage.REVIEW: "reviewRequested",
}


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    body: dict[str, Any]

    @property
    def duplicate(self) -> bool:
        return bool(self.body.get("status") == "duplicate")

    @property
    def triggered(self) -> bool:
        """A stage was triggered by this delivery, now."""
        return self.body.get("status") == "accepted" and self.body.get("codexStageTriggered") is not None


class Orchestration(Protocol):
    """What the lifecycle driver does for the GitHub intake: plans from comments, approvals by comment."""

    async def approve(
        self, idea_id: uuid.UUID, *, approve: bool, version: int | None, by: str, reason: str | None
    ) -> Any: ...

    async def submit_plan(
        self, idea_id: uuid.UUID, *, markdown: str | None, document: Any, source: str
    ) -> Any: ...


class GitHubIntake:
    #: set by the runtime: ideas the orchestrator manages take plans and approvals from comments
    orchestration: Orchestration | None = None

    def __init__(
        self,
        *,
        store: Store,
        codex_tasks: CodexTaskIntake,
        forge: Forge | None,
        github: GitHubSettings,
        codex: CodexSettings,
        topics: TopicSettings,
        clock: Clock,
        workflow_identifier: str | None = None,
    ) -> None:
        self._store = store
        self._tasks = codex_tasks
        self._forge = forge
        self._github = github
        self._codex = codex
        self._topics = topics
        self._clock = clock
        self._specs = SpecComments(forge)
        #: deliveries being handled, each with its lock and how many requests wait for it
        self._in_flight: dict[str, list[Any]] = {}
        self._pulls = PullActivityHandler(
            forge=forge,
            handoff_comment=github.review_handoff_comment,
            workflow_identifier=workflow_identifier,
        )

    async def receive(self, delivery: WebhookDelivery) -> WebhookAnswer:
        decision = self._decide(delivery)
        if isinstance(decision, Ignored):
            # recording claims the delivery id: a redelivery is answered from the inbox there
            return await self._ignore(delivery, decision)
        # anything else calls GitHub first: a redelivery must not do that again, nor a copy arriving
        # meanwhile (in this process; across replicas the inbox claim still records the work once)
        async with self._serialized(delivery.delivery_id):
            stored = await self._store.find_delivery(DELIVERY_SOURCE, delivery.delivery_id)
            if stored is not None:
                return _replay(delivery, stored)
            if not isinstance(decision, PullActivity) and await self._store.find_delivery(
                CODEX_TASK_SOURCE, delivery.delivery_id
            ):  # its task came first through POST /codex/tasks or the bus: nothing to do on GitHub either
                return await self._ignore(delivery, Ignored("the task of this delivery was recorded before"))
            return await self._act(delivery, decision)

    @contextlib.asynccontextmanager
    async def _serialized(self, delivery_id: str) -> AsyncIterator[None]:
        entry = self._in_flight.get(delivery_id)
        if entry is None:
            entry = self._in_flight[delivery_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._in_flight[delivery_id]

    async def _act(self, delivery: WebhookDelivery, decision: Decision) -> WebhookAnswer:
        logger.info(
            "webhook received: delivery=%s event=%s action=%s decision=%s",
            delivery.delivery_id,
            delivery.event,
            delivery.action,
            type(decision).__name__,
        )
        if isinstance(decision, PlanningTrigger):
            return await self._planning(delivery, decision)
        if isinstance(decision, ImplementationTrigger):
            return await self._implementation(delivery, decision)
        if isinstance(decision, ReviewTrigger):
            return await self._review(delivery, decision)
        if isinstance(decision, PullActivity):
            done = await self._pulls.handle(decision)
            return await self._record(delivery, "accepted", None, detail={"actions": done})
        return await self._ignore(delivery, decision)

    def _decide(self, delivery: WebhookDelivery) -> Decision:
        sender = delivery.payload.get("sender")
        if delivery.event in {"issues", "issue_comment"} and isinstance(sender, Mapping):
            login = normalize_login(sender.get("login"))
            is_bot = sender.get("type") == "Bot" or (login or "").endswith("[bot]")
            if is_bot and login != self._codex.workflow_login:
                return Ignored(f"sender {login} is a bot other than codex.workflow_login")
        return decide(delivery, self._codex)

    # --- planning -------------------------------------------------------------------------------------------

    async def _planning(self, delivery: WebhookDelivery, trigger: PlanningTrigger) -> WebhookAnswer:
        issue = trigger.issue
        details: IdeaDetails | None = None
        held: int | None = None  # the problems comment to update once planning is recorded
        if is_idea_spec(issue.body):
            try:
                spec = parse_idea_spec(issue.body)
            except InvalidIdeaSpec as exc:
                await self._specs.report_problems(issue, render_spec_problems(exc.problems))
                return await self._ignore(
                    delivery,
                    Ignored(f"the idea spec is invalid: {'; '.join(str(p) for p in exc.problems)}"),
                    event_kind="idea_spec.rejected",
                )
            details = IdeaDetails(priority=spec.priority, spec=spec.to_json())
            if trigger.edited:
                held = await self._specs.held_back(issue)
                if held is None:
                    return await self._ignore(
                        delivery, Ignored("issues.edited of a valid spec starts nothing")
                    )
        elif trigger.edited:
            return await self._ignore(delivery, Ignored("issues.edited starts nothing"))

        placeholder = await self._placeholder(issue)
        if placeholder == "plan":
            return await self._ignore(delivery, Ignored("a plan already exists for this issue"))
        head = branch_name(self._codex.branch_prefix, issue.number, delivery.delivery_id)
        prompt = prompts.planning_prompt(**_prompt_fields(issue, head))
        task = self._task(Stage.PLANNING, delivery, issue, head=head, prompt=prompt)
        answer = await self._admit(delivery, Stage.PLANNING, task, issue.number, details=details)
        if held is not None and answer.triggered:
            await self._specs.mark_fixed(issue, held)
        if answer.triggered and self._forge is not None:
            try:
                await self._forge.add_reaction(
                    issue.repository, issue.number, Reaction(self._github.ack_reaction)
                )
            except ForgeError as exc:
                logger.warning(
                    "ack reaction failed: issue=%s#%s error=%s", issue.repository, issue.number, exc
                )
        return answer

    async def _placeholder(self, issue: IssueRef) -> str:
        """``plan`` when a real plan exists, ``placeholder`` when one exists or was posted, ``none``."""
        if self._forge is None:
            logger.info(
                "no forge configured: planning placeholder not posted for %s#%s",
                issue.repository,
                issue.number,
            )
            return "none"
        try:
            latest = await self._forge.latest_comment_with(issue.repository, issue.number, PLAN_MARKER)
            if latest is not None:
                return "placeholder" if is_placeholder(latest.body) else "plan"
            await self._forge.create_comment(issue.repository, issue.number, PLANNING_PLACEHOLDER_COMMENT)
            return "placeholder"
        except ForgeError as exc:
            logger.warning(
                "planning placeholder failed: issue=%s#%s error=%s", issue.repository, issue.number, exc
            )
            return "none"

    # --- implementation -------------------------------------------------------------------------------------

    async def _implementation(
        self, delivery: WebhookDelivery, trigger: ImplementationTrigger
    ) -> WebhookAnswer:
        issue = trigger.issue
        orchestrated = await self._orchestrated(delivery, trigger)
        if orchestrated is not None:
            return orchestrated
        plan = trigger.plan or await self._latest_plan(issue)
        head = branch_name(self._codex.branch_prefix, issue.number, delivery.delivery_id)
        prompt = prompts.implementation_prompt(
            **_prompt_fields(issue, head), plan_body=plan.body if plan else None
        )
        task = self._task(Stage.IMPLEMENTATION, delivery, issue, head=head, prompt=prompt)
        if plan is not None:
            task.plan_comment_id = plan.id
            task.plan_comment_url = plan.url
            task.plan_comment_body = plan.body
        return await self._admit(delivery, Stage.IMPLEMENTATION, task, issue.number)

    async def _orchestrated(
        self, delivery: WebhookDelivery, trigger: ImplementationTrigger
    ) -> WebhookAnswer | None:
        """The issue's idea as the orchestrator runs it: ``execute plan`` approves a plan awaiting approval,
        and a plan comment in the plan format (docs/plans.md) becomes a plan version of an idea not planned
        yet. Anything else (a free-form plan, an idea past approval) takes Froussard's path: one
        implementation run."""
        if self.orchestration is None:
            return None
        issue = trigger.issue
        idea = await self._store.find_idea(
            IdeaSource.GITHUB_ISSUE, github_issue_ref(issue.repository, issue.number)
        )
        if idea is None:
            return None
        by = normalize_login(_sender(delivery)) or "github"
        if trigger.plan is None and idea.state is IdeaState.AWAITING_APPROVAL:
            try:
                await self.orchestration.approve(
                    idea.id, approve=True, version=None, by=by, reason="execute plan comment"
                )
            except Conflict as exc:  # decided meanwhile (a redelivery after a crash): nothing more to do
                return await self._ignore(delivery, Ignored(f"the plan was decided before: {exc.message}"))
            return await self._record(
                delivery, "accepted", None, detail={"ideaId": str(idea.id), "approvedBy": by}
            )
        if trigger.plan is not None and idea.state in {IdeaState.REGISTERED, IdeaState.PLANNING}:
            try:
                parse_plan(trigger.plan.body)
            except InvalidPlan:
                return None  # a free-form plan: Froussard's single implementation run
            await self.orchestration.submit_plan(
                idea.id, markdown=trigger.plan.body, document=None, source="comment"
            )
            return await self._record(
                delivery, "accepted", None, detail={"ideaId": str(idea.id), "planComment": trigger.plan.id}
            )
        return None

    async def _latest_plan(self, issue: IssueRef) -> PlanComment | None:
        if self._forge is None:
            return None
        try:
            latest = await self._forge.latest_comment_with(issue.repository, issue.number, PLAN_MARKER)
        except ForgeError as exc:
            logger.warning("plan lookup failed: issue=%s#%s error=%s", issue.repository, issue.number, exc)
            return None
        if latest is None or is_placeholder(latest.body):
            return None
        return PlanComment(id=latest.id, url=latest.url, body=latest.body)

    # --- review ---------------------------------------------------------------------------------------------

    async def _review(self, delivery: WebhookDelivery, trigger: ReviewTrigger) -> WebhookAnswer:
        if self._forge is None:
            return await self._ignore(delivery, Ignored("no forge is configured to read the pull request"))
        repo, number = trigger.repository, trigger.pull_number
        try:
            pull = await self._forge.get_pull(repo, number)
        except ForgeNotFound:
            return await self._ignore(delivery, Ignored(f"pull request {repo}#{number} not found"))
        if pull.state != "open" or pull.merged:
            return await self._ignore(delivery, Ignored(f"pull request #{number} is closed"))
        if not (pull.head_ref and pull.head_sha and pull.base_ref):
            return await self._ignore(delivery, Ignored(f"pull request #{number} lacks its head or base"))
        issue_number = issue_number_from_branch(pull.head_ref, self._codex.branch_prefix)
        if issue_number is None:
            return await self._ignore(
                delivery, Ignored(f"no issue number in the head branch {pull.head_ref!r} of #{number}")
            )
        context = await fetch_review_context(self._forge, repo, pull)
        issue = IssueRef(
            repository=repo,
            number=issue_number,
            title=pull.title,
            body=pull.body,
            url=pull.url,
            base=pull.base_ref,
            sender=trigger.sender,
        )
        prompt = prompts.review_prompt(
            repository=repo,
            pull_number=number,
            pull_title=pull.title,
            pull_url=pull.url,
            base=pull.base_ref,
            head=pull.head_ref,
            pull_body=pull.body,
            issue_number=issue_number,
            context=context,
        )
        task = self._task(
            Stage.REVIEW, delivery, issue, head=pull.head_ref, prompt=prompt, base=pull.base_ref
        )
        task.review_context.CopyFrom(_review_context_proto(context))
        dedupe = review_dedupe_key(repo, number, trigger.comment_id, trigger.comment_updated_at)
        answer = await self._admit(
            delivery,
            Stage.REVIEW,
            task,
            number,
            fingerprint=context.fingerprint,
            review_key=dedupe,
            extra_headers=(
                ("x-codex-review-fingerprint", context.fingerprint.encode()),
                ("x-codex-review-head-sha", pull.head_sha.encode()),
            ),
        )
        if answer.duplicate:  # this comment (at this edit) was handled through another delivery
            return await self._ignore(
                delivery, Ignored(f"review already requested for comment {trigger.comment_id}")
            )
        return answer

    # --- shared ---------------------------------------------------------------------------------------------

    def _task(
        self,
        stage: Stage,
        delivery: WebhookDelivery,
        issue: IssueRef,
        *,
        head: str,
        prompt: str,
        base: str | None = None,
    ) -> pb.CodexTask:
        issued_at = Timestamp()
        issued_at.FromDatetime(self._clock.now())
        return pb.CodexTask(
            stage=codex_task.enum_for(stage),  # type: ignore[arg-type]
            prompt=prompt,
            repository=issue.repository,
            base=base or issue.base,
            head=head,
            issue_number=issue.number,
            issue_url=issue.url,
            issue_title=issue.title,
            issue_body=issue.body,
            sender=issue.sender,
            issued_at=issued_at,
            delivery_id=delivery.delivery_id,
        )

    async def _admit(
        self,
        delivery: WebhookDelivery,
        stage: Stage,
        task: pb.CodexTask,
        number: int,
        *,
        details: IdeaDetails | None = None,
        fingerprint: str | None = None,
        review_key: str | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> WebhookAnswer:
        now = self._clock.now()
        accepted = codex_task.accept(task)
        outgoing = task_messages(
            task,
            key=task_key(stage, number, fingerprint),
            delivery=delivery,
            topics=self._topics,
            now=now,
            extra_headers=extra_headers,
        )
        raw = raw_message(delivery, self._topics)

        def messages(ids: IngestIds) -> list[Message]:
            found = [*outgoing]
            if details is not None and ids.idea_created:
                found.append(
                    intent_message(
                        self._topics.codex_intent,
                        ids.idea_id,
                        source=IdeaSource.GITHUB_ISSUE,
                        source_ref=github_issue_ref(task.repository, task.issue_number),
                        repository=task.repository,
                        title=task.issue_title,
                        priority=details.priority,
                        state=IdeaState.REGISTERED,
                        spec=details.spec,
                    )
                )
            found.append(raw)
            return found

        aliases = [(CODEX_TASK_SOURCE, delivery.delivery_id)]
        if review_key is not None:
            aliases.insert(0, (DELIVERY_SOURCE, delivery.delivery_id))
        result = await self._tasks.admit(
            accepted,
            task.SerializeToString(),
            source=REVIEW_SOURCE if review_key is not None else DELIVERY_SOURCE,
            key=review_key,
            aliases=aliases,
            answer=_webhook_fields(delivery, "accepted", _TRIGGERED[stage]),
            messages=messages,
            idea=details,
            actor=ACTOR,
        )
        if result.duplicate:
            return WebhookAnswer(_public(result.body, status="duplicate", delivery=delivery))
        logger.info(
            "codex stage triggered: stage=%s repo=%s number=%s delivery=%s run=%s",
            stage.value,
            task.repository,
            number,
            delivery.delivery_id,
            result.body.get("runId"),
        )
        return WebhookAnswer(_public(result.body, status="accepted", delivery=delivery))

    async def _ignore(
        self, delivery: WebhookDelivery, ignored: Ignored, *, event_kind: str | None = None
    ) -> WebhookAnswer:
        kind = event_kind or ("trigger.ignored" if ignored.refused_trigger else None)
        logger.info(
            "webhook ignored: delivery=%s event=%s action=%s reason=%s",
            delivery.delivery_id,
            delivery.event,
            delivery.action,
            ignored.reason,
        )
        return await self._record(delivery, "ignored", kind, detail={"reason": ignored.reason})

    async def _record(
        self, delivery: WebhookDelivery, status: str, event_kind: str | None, *, detail: Mapping[str, Any]
    ) -> WebhookAnswer:
        def effects(_ids: DeliveryIds) -> IngestEffects:
            events = []
            if event_kind is not None:
                events.append(
                    NewEvent(
                        kind=event_kind,
                        actor=ACTOR,
                        payload={
                            "delivery_id": delivery.delivery_id,
                            "event": delivery.event,
                            "action": delivery.action,
                            "sender": normalize_login(_sender(delivery)),
                            **detail,
                        },
                    )
                )
            return IngestEffects(
                response={**_webhook_fields(delivery, status, None), **detail},
                events=events,
                messages=[raw_message(delivery, self._topics)],
            )

        result = await self._store.record_delivery(
            Delivery(
                source=DELIVERY_SOURCE,
                delivery_id=delivery.delivery_id,
                received_at=self._clock.now(),
                effects=effects,
            )
        )
        if result.duplicate:
            return _replay(delivery, result.response)
        return WebhookAnswer(dict(result.response))


def _prompt_fields(issue: IssueRef, head: str) -> dict[str, Any]:
    """The issue's part of the planning and implementation prompts."""
    return {
        "repository": issue.repository,
        "issue_number": issue.number,
        "issue_title": issue.title,
        "issue_url": issue.url,
        "base": issue.base,
        "head": head,
        "issue_body": issue.body,
    }


def _sender(delivery: WebhookDelivery) -> Any:
    sender = delivery.payload.get("sender")
    return sender.get("login") if isinstance(sender, Mapping) else None


def _webhook_fields(delivery: WebhookDelivery, status: str, stage: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "deliveryId": delivery.delivery_id,
        "event": delivery.event,
        "action": delivery.action,
        "codexStageTriggered": stage,
    }


def _public(stored: Mapping[str, Any], *, status: str, delivery: WebhookDelivery) -> dict[str, Any]:
    """The webhook answer out of a stored answer (which also holds the codex-task answer's fields)."""
    body = {key: stored.get(key) for key in _WEBHOOK_FIELDS}
    body.update({key: stored[key] for key in _ID_FIELDS if stored.get(key) is not None})
    body["status"] = status
    body["deliveryId"] = delivery.delivery_id
    return body


def _replay(delivery: WebhookDelivery, stored: Mapping[str, Any]) -> WebhookAnswer:
    logger.info("webhook duplicate: delivery=%s", delivery.delivery_id)
    body = _public(stored, status="duplicate", delivery=delivery)
    if "actions" in stored:
        body["actions"] = stored["actions"]
    return WebhookAnswer(body)


def _review_context_proto(context: ReviewContext) -> pb.CodexReviewContext:
    message = pb.CodexReviewContext()
    if context.summary is not None:
        message.summary = context.summary
    for thread in context.threads:
        item = message.review_threads.add(summary=thread.summary)
        if thread.url:
            item.url = thread.url
        if thread.author:
            item.author = thread.author
    for check in context.failing_checks:
        entry = message.failing_checks.add(name=check.name)
        if check.conclusion:
            entry.conclusion = check.conclusion
        if check.url:
            entry.url = check.url
        if check.details:
            entry.details = check.details
    message.additional_notes.extend(context.additional_notes)
    return message
