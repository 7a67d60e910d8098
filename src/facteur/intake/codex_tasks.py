"""``CodexTask`` intake: the path of ``POST /codex/tasks`` (and, later, of the Kafka listener).

A task is decoded and checked, then recorded in one transaction — inbox entry for its delivery id, idea
(``github_issue``, ``owner/repo#n``), the task for its stage, the run and an audit event — together with the
answer that every replay of the same delivery id will get. Planning tasks are then submitted to the
executor when ``codex_dispatch.planning_enabled`` is set; other stages are recorded for the orchestrator.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from facteur.bus.port import Message
from facteur.clock import Clock, Ids
from facteur.domain import codex_task
from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaSource, github_issue_ref
from facteur.domain.runs import Run, RunStatus, workflow_name
from facteur.domain.stages import Stage
from facteur.domain.tasks import TaskState
from facteur.orchestrator.dispatch import Dispatcher
from facteur.store.port import IdeaDraft, Ingest, IngestEffects, IngestIds, RunDraft, Store, TaskDraft

logger = logging.getLogger(__name__)

DELIVERY_SOURCE = "codex_task"
ACTOR = "intake:codex_task"


@dataclass(frozen=True, slots=True)
class IdeaDetails:
    """What an idea spec says about the idea a task belongs to (used when the idea is new)."""

    priority: int
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer the sender: the body of the 202, and whether it is a replay."""

    body: dict[str, Any]
    duplicate: bool


def decode_task(body: bytes, content_type: str | None) -> codex_task.AcceptedTask:
    """Decode and check a posted task; raise :class:`facteur.errors.InvalidInput` naming the problem."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        task = codex_task.decode_json(body)
    else:
        task = codex_task.decode_binary(body)
    return codex_task.accept(task)


class CodexTaskIntake:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        ids: Ids,
        planning_enabled: bool,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._ids = ids
        self._planning_enabled = planning_enabled
        self._answers = RecentAnswers()

    def decode(self, body: bytes, content_type: str | None) -> codex_task.AcceptedTask:
        return decode_task(body, content_type)

    async def receive(self, accepted: codex_task.AcceptedTask, raw: bytes) -> Answer:
        task = accepted.task
        logger.info(
            "codex task received: stage=%s repo=%s issue=%s delivery=%s",
            codex_task.stage_name(task.stage),
            accepted.repository,
            accepted.issue_number,
            accepted.delivery_id,
        )
        # Replays of recent deliveries are answered from memory; any other replay (after a restart, or one
        # accepted by another replica) is caught by the inbox claim inside the ingest transaction.
        known = self._answers.get(accepted.delivery_id)
        if known is not None:
            return self._replay(accepted, known)
        return await self.admit(accepted, raw)

    async def admit(
        self,
        accepted: codex_task.AcceptedTask,
        raw: bytes,
        *,
        source: str = DELIVERY_SOURCE,
        key: str | None = None,
        aliases: Sequence[tuple[str, str]] = (),
        answer: Mapping[str, Any] | None = None,
        messages: Callable[[IngestIds], Sequence[Message]] | None = None,
        idea: IdeaDetails | None = None,
        actor: str = ACTOR,
    ) -> Answer:
        """Record the task (idea, task, run, events) under the inbox key ``(source, key or delivery id)``
        (the shared path of every stage trigger) and submit planning runs.

        Other intakes (GitHub webhooks) claim their own key and name the ``codex_task`` key among the
        ``aliases``, so that the same task arriving again through the bus is a duplicate; ``answer`` fields
        join the stored answer, ``messages`` go to the outbox in the same transaction, ``idea`` carries
        what an idea spec says about a new idea.
        """
        task = accepted.task
        executor = self._dispatcher.executor
        dispatch = accepted.stage is Stage.PLANNING and self._planning_enabled
        now = self._clock.now()
        run_id = self._ids.new_id()
        name = workflow_name(accepted.stage, run_id, now) if dispatch else None
        message = codex_task.to_task_message(task, now=now)
        message["deliveryId"] = accepted.delivery_id
        source_ref = github_issue_ref(accepted.repository, accepted.issue_number)
        title = task.issue_title or source_ref
        event_body = json.dumps(message, separators=(",", ":")).encode()

        def effects(ids: IngestIds) -> IngestEffects:
            response: dict[str, Any] = {
                **(answer or {}),
                "stage": accepted.stage.value,
                "namespace": executor.namespace if dispatch else None,
                "workflowName": name,
                "submittedAt": _rfc3339(now) if dispatch else None,
                "ideaId": str(ids.idea_id),
                "taskId": str(ids.task_id),
                "runId": str(ids.run_id),
            }
            events = []
            if ids.idea_created:
                events.append(
                    NewEvent(
                        kind="idea.registered",
                        actor=actor,
                        payload={"source": IdeaSource.GITHUB_ISSUE.value, "title": title},
                        idea_id=ids.idea_id,
                    )
                )
            events.append(
                NewEvent(
                    kind="codex_task.accepted",
                    actor=actor,
                    payload={
                        "delivery_id": accepted.delivery_id,
                        "stage": accepted.stage.value,
                        "repository": accepted.repository,
                        "issue_number": accepted.issue_number,
                        "sender": task.sender,
                        "dispatch": _dispatch_decision(accepted.stage, dispatch),
                        "workflow": name,
                    },
                    idea_id=ids.idea_id,
                    task_id=ids.task_id,
                    run_id=ids.run_id,
                )
            )
            outgoing = list(messages(ids)) if messages is not None else []
            return IngestEffects(response=response, events=events, messages=outgoing)

        spec: dict[str, Any] = {"issue_url": task.issue_url, "body": task.issue_body}
        if idea is not None:
            spec.update(idea.spec)
        result = await self._store.ingest(
            Ingest(
                source=source,
                aliases=aliases,
                delivery_id=key or accepted.delivery_id,
                received_at=now,
                idea=IdeaDraft(
                    id=self._ids.new_id(),
                    source=IdeaSource.GITHUB_ISSUE,
                    source_ref=source_ref,
                    repository=accepted.repository,
                    title=title,
                    initiator=task.sender,
                    spec=spec,
                    priority=2 if idea is None else idea.priority,
                ),
                task=TaskDraft(
                    id=self._ids.new_id(),
                    key=accepted.stage.value,
                    title=f"{accepted.stage.value.capitalize()} {source_ref}",
                    stage=accepted.stage,
                    state=TaskState.QUEUED if dispatch else TaskState.READY,
                ),
                run=RunDraft(
                    id=run_id,
                    stage=accepted.stage,
                    delivery_id=accepted.delivery_id,
                    status=RunStatus.QUEUED,
                    executor=executor.kind if dispatch else None,
                    workflow_name=name,
                    namespace=executor.namespace if dispatch else None,
                    event_body=event_body,
                    raw_event=raw,
                ),
                effects=effects,
            )
        )
        if result.duplicate:
            if source == DELIVERY_SOURCE:  # else the stored answer is the one of the key claimed first
                self._answers.remember(accepted.delivery_id, result.response)
            return self._replay(accepted, result.response)
        self._answers.remember(accepted.delivery_id, result.response)
        if dispatch and result.ids is not None:
            assert name is not None
            run = Run(
                id=run_id,
                idea_id=result.ids.idea_id,
                task_id=result.ids.task_id,
                stage=accepted.stage,
                delivery_id=accepted.delivery_id,
                status=RunStatus.QUEUED,
                executor=executor.kind,
                workflow_name=name,
                namespace=executor.namespace,
                created_at=now,
                submitted_at=None,
                finished_at=None,
                detail=None,
            )
            await self._dispatcher.submit(run, event_body, raw)
        elif accepted.stage is Stage.PLANNING:
            logger.info(
                "codex planning dispatch disabled: repo=%s issue=%s delivery=%s",
                accepted.repository,
                accepted.issue_number,
                accepted.delivery_id,
            )
        else:
            logger.info(
                "codex task recorded: stage=%s repo=%s issue=%s run=%s",
                accepted.stage.value,
                accepted.repository,
                accepted.issue_number,
                run_id,
            )
        return Answer({**result.response, "duplicate": False}, duplicate=False)

    def _replay(self, accepted: codex_task.AcceptedTask, stored: Any) -> Answer:
        logger.info(
            "codex task duplicate: delivery=%s workflow=%s", accepted.delivery_id, stored.get("workflowName")
        )
        return Answer({**stored, "duplicate": True}, duplicate=True)


class RecentAnswers:
    """The stored answers of the most recent deliveries, bounded: answers never change once stored."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._answers: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    def get(self, delivery_id: str) -> Mapping[str, Any] | None:
        answer = self._answers.get(delivery_id)
        if answer is not None:
            self._answers.move_to_end(delivery_id)
        return answer

    def remember(self, delivery_id: str, answer: Mapping[str, Any]) -> None:
        self._answers[delivery_id] = answer
        self._answers.move_to_end(delivery_id)
        while len(self._answers) > self._capacity:
            self._answers.popitem(last=False)


def _dispatch_decision(stage: Stage, dispatch: bool) -> str:
    if dispatch:
        return "submit"
    if stage is Stage.PLANNING:
        return "planning_disabled"
    return "recorded_for_orchestrator"


def _rfc3339(value: Any) -> str:
    return str(value.strftime("%Y-%m-%dT%H:%M:%SZ"))
