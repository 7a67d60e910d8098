"""The store's write transactions, in set form: each takes a list of operations and runs them with one
statement per step for the whole list.

The batch writer (:mod:`facteur.store.writer`) hands every group of concurrent ingests, or of concurrent
run updates, to one call here; a single operation is a list of one. Each step is one ``executemany``: on
PostgreSQL psycopg sends its statements in pipeline mode — one network round trip per step instead of one
per row — and on SQLite it stays in C. The result is the same as running the operations one after the
other in list order: a delivery id seen twice is a duplicate the second time, an idea or a task created by
one operation is found by the next, and the audit chain is appended once, in order.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from facteur.bus.port import Message
from facteur.clock import Clock
from facteur.domain.events import Event, NewEvent, seal
from facteur.domain.ideas import Idea
from facteur.domain.runs import Run
from facteur.errors import Conflict, NotFound, StoreError
from facteur.store.compiled import Codec
from facteur.store.orchestration import insert_tasks
from facteur.store.port import (
    REPORT_SOURCE,
    Delivery,
    DeliveryIds,
    DeliveryResult,
    IdeaCreation,
    IdeaDraft,
    Ingest,
    IngestIds,
    IngestResult,
    OutboxBacklog,
    OutboxEntry,
    ReportOutcome,
    ReportResult,
    RunReport,
    RunUpdate,
    outbox_key,
    report_delivery_id,
)
from facteur.store.reports import report_changes
from facteur.store.rows import new_idea, run_from_row
from facteur.store.statements import statements
from facteur.store.tables import approvals, ideas, plans, runs
from facteur.store.writer import BatchHooks, Operation, SetOperation

#: where a batch collects its events (``Connection.info`` outlives the transaction: popped at its end)
_PENDING_EVENTS = "facteur.pending_events"
#: the chain's head (seq, hash) as this transaction left it, while it holds the head's lock
_CHAIN_HEAD = "facteur.chain_head"

#: (run id, update, event, messages) — the arguments of one ``update_run``
RunChange = tuple[uuid.UUID, RunUpdate, NewEvent | None, Sequence[Message]]

T = TypeVar("T")


def cursor_of(conn: sa.Connection) -> Any:
    """The driver's cursor, inside the transaction SQLAlchemy began."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class Writes:
    def __init__(self, dialect: str, clock: Clock) -> None:
        self._q = statements(dialect)
        self._c = Codec(dialect)
        self._postgres = dialect == "postgresql"
        self._clock = clock

    # --- one statement for many rows ------------------------------------------------------------------------

    def _many(
        self, cursor: Any, sql: str, rows: Sequence[Mapping[str, Any]], *, returning: bool
    ) -> list[Any]:
        """Execute ``sql`` once per row; with ``returning``, the first row each execution returned (or
        None)."""
        if not rows:
            return []
        if self._postgres:
            cursor.executemany(sql, rows, returning=returning)
            if not returning:
                return []
            found = [cursor.fetchone()]
            while cursor.nextset():
                found.append(cursor.fetchone())
            return found
        if not returning:
            cursor.executemany(sql, rows)
            return []
        found = []
        for row in rows:
            cursor.execute(sql, row)
            found.append(cursor.fetchone())
        return found

    # --- ingest ---------------------------------------------------------------------------------------------

    def ingest(self, conn: sa.Connection, ingest: Ingest) -> IngestResult:
        result: IngestResult = self.ingest_many(conn, [(ingest,)])[0]
        return result

    def ingest_many(self, conn: sa.Connection, items: list[tuple[Any, ...]]) -> list[IngestResult]:
        ingests: list[Ingest] = [item[0] for item in items]
        q, c = self._q, self._c
        cursor = cursor_of(conn)
        first_of, claimed, stored = self._claim(conn, cursor, ingests)
        results: dict[int, IngestResult] = {
            n: IngestResult(None, response, duplicate=True) for n, response in stored.items()
        }

        if claimed:
            idea_ids, created_by = self._ideas(
                cursor, [(ingests[n].idea, ingests[n].received_at) for n in claimed]
            )
            task_ids = self._tasks(cursor, [ingests[n] for n in claimed], idea_ids)
            self._many(
                cursor,
                q.insert_run.sql,
                [self._run_values(ingests[n], idea_ids[k], task_ids[k]) for k, n in enumerate(claimed)],
                returning=False,
            )
            answers: list[dict[str, Any]] = []
            aliases: list[dict[str, Any]] = []
            timed: list[tuple[NewEvent, datetime]] = []
            outgoing: list[tuple[Message, datetime]] = []
            for k, n in enumerate(claimed):
                ingest = ingests[n]
                ids = IngestIds(
                    idea_id=idea_ids[k],
                    task_id=task_ids[k],
                    run_id=ingest.run.id,
                    idea_created=created_by.get(idea_ids[k]) == k,
                )
                effects = ingest.effects(ids)
                response = c.json(dict(effects.response))
                answers.append(
                    {"b_source": ingest.source, "b_delivery_id": ingest.delivery_id, "response": response}
                )
                aliases.extend(
                    {
                        "source": source,
                        "delivery_id": delivery_id,
                        "received_at": c.timestamp(ingest.received_at),
                        "response": response,
                    }
                    for source, delivery_id in ingest.aliases
                )
                timed.extend((event, ingest.received_at) for event in effects.events)
                outgoing.extend((message, ingest.received_at) for message in effects.messages)
                results[n] = IngestResult(
                    ids, effects.response, duplicate=False, messages=len(effects.messages)
                )
            self._many(cursor, q.answer_delivery.sql, answers, returning=False)
            self._many(cursor, q.alias_delivery.sql, aliases, returning=False)
            self.enqueue(conn, outgoing)
            self.append_events(conn, timed)
        return _in_order(ingests, first_of, results, lambda first: IngestResult(None, first.response, True))

    def record(self, conn: sa.Connection, delivery: Delivery) -> DeliveryResult:
        result: DeliveryResult = self.record_many(conn, [(delivery,)])[0]
        return result

    def record_many(self, conn: sa.Connection, items: list[tuple[Any, ...]]) -> list[DeliveryResult]:
        """Deliveries that start no run: claim each, create or find the ideas they name, store the answers,
        enqueue their messages and append their events."""
        deliveries: list[Delivery] = [item[0] for item in items]
        q, c = self._q, self._c
        cursor = cursor_of(conn)
        first_of, claimed, stored = self._claim(conn, cursor, deliveries)
        results: dict[int, DeliveryResult] = {
            n: DeliveryResult(None, response, duplicate=True) for n, response in stored.items()
        }
        if claimed:
            with_idea = [n for n in claimed if deliveries[n].idea is not None]
            idea_ids, created_by = self._ideas(
                cursor, [(_idea(deliveries[n].idea), deliveries[n].received_at) for n in with_idea]
            )
            idea_of = {n: (idea_ids[k], created_by.get(idea_ids[k]) == k) for k, n in enumerate(with_idea)}
            answers: list[dict[str, Any]] = []
            timed: list[tuple[NewEvent, datetime]] = []
            outgoing: list[tuple[Message, datetime]] = []
            for n in claimed:
                delivery = deliveries[n]
                idea_id, created = idea_of.get(n, (None, False))
                ids = DeliveryIds(idea_id=idea_id, idea_created=created)
                effects = delivery.effects(ids)
                answers.append(
                    {
                        "b_source": delivery.source,
                        "b_delivery_id": delivery.delivery_id,
                        "response": c.json(dict(effects.response)),
                    }
                )
                timed.extend((event, delivery.received_at) for event in effects.events)
                outgoing.extend((message, delivery.received_at) for message in effects.messages)
                results[n] = DeliveryResult(
                    ids, effects.response, duplicate=False, messages=len(effects.messages)
                )
            self._many(cursor, q.answer_delivery.sql, answers, returning=False)
            self.enqueue(conn, outgoing)
            self.append_events(conn, timed)
        return _in_order(
            deliveries, first_of, results, lambda first: DeliveryResult(None, first.response, True)
        )

    def _claim(
        self, conn: sa.Connection, cursor: Any, claims: Sequence[Claim]
    ) -> tuple[dict[tuple[str, str], int], list[int], dict[int, Mapping[str, Any]]]:
        """Claim each delivery id in the inbox; a later claim of the same id in the list is a duplicate of
        the first. Returns the first claimant of each id, the claimants that won, and the stored answers of
        those accepted before this batch."""
        c = self._c
        first_of: dict[tuple[str, str], int] = {}
        for n, claim in enumerate(claims):
            first_of.setdefault((claim.source, claim.delivery_id), n)
        claimants = sorted(first_of.values())
        rows = self._many(
            cursor,
            self._q.claim_delivery.sql,
            [
                {
                    "source": claims[n].source,
                    "delivery_id": claims[n].delivery_id,
                    "received_at": c.timestamp(claims[n].received_at),
                }
                for n in claimants
            ],
            returning=True,
        )
        claimed = [n for n, row in zip(claimants, rows, strict=True) if row is not None]
        stored: dict[int, Mapping[str, Any]] = {}
        for n, row in zip(claimants, rows, strict=True):
            if row is None:  # accepted before this batch
                response = find_delivery(conn, claims[n].source, claims[n].delivery_id)
                if response is None:  # pragma: no cover - the claimant commits its response with the claim
                    raise StoreError(f"delivery {claims[n].delivery_id} is recorded without a response")
                stored[n] = response
        return first_of, claimed, stored

    def _ideas(
        self, cursor: Any, drafts: list[tuple[IdeaDraft, datetime]]
    ) -> tuple[list[uuid.UUID], dict[uuid.UUID, int]]:
        """The idea of each draft (created from the first draft of each source ref when it is new), and
        for each created idea the index of the draft that created it."""
        q, c = self._q, self._c
        first: dict[tuple[str, str], int] = {}
        for k, (draft, _at) in enumerate(drafts):
            first.setdefault((draft.source.value, draft.source_ref), k)
        keys = list(first)
        inserted = self._many(
            cursor,
            q.insert_idea.sql,
            [self._idea_values(*drafts[first[key]]) for key in keys],
            returning=True,
        )
        missing = [key for key, row in zip(keys, inserted, strict=True) if row is None]
        found = self._many(
            cursor,
            q.find_idea.sql,
            [{"b_source": source, "b_source_ref": ref} for source, ref in missing],
            returning=True,
        )
        id_of: dict[tuple[str, str], uuid.UUID] = {}
        created_by: dict[uuid.UUID, int] = {}
        for key, row in zip(keys, inserted, strict=True):
            if row is not None:
                idea_id = _uuid(c.uuid_out(row[0]))
                id_of[key] = idea_id
                created_by[idea_id] = first[key]
        for key, row in zip(missing, found, strict=True):
            if row is None:  # pragma: no cover - a conflicting idea is committed before we can see it
                raise StoreError(f"idea {key[1]} conflicts but cannot be found")
            id_of[key] = _uuid(c.uuid_out(row[0]))
        return [id_of[(draft.source.value, draft.source_ref)] for draft, _at in drafts], created_by

    def _tasks(self, cursor: Any, ingests: list[Ingest], idea_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """The task of each ingest: created from the first draft of each (idea, key); an existing task, or
        one that later ingests of this list name again, takes the last one's state and time."""
        q, c = self._q, self._c
        first: dict[tuple[uuid.UUID, str], int] = {}
        last: dict[tuple[uuid.UUID, str], int] = {}
        for k, ingest in enumerate(ingests):
            key = (idea_ids[k], ingest.task.key)
            first.setdefault(key, k)
            last[key] = k
        keys = list(first)
        inserted = self._many(
            cursor,
            q.insert_task.sql,
            [self._task_values(ingests[first[key]], key[0]) for key in keys],
            returning=True,
        )
        touch = [
            key for key, row in zip(keys, inserted, strict=True) if row is None or last[key] != first[key]
        ]
        touched = self._many(
            cursor,
            q.touch_task.sql,
            [
                {
                    "b_idea_id": c.uuid(key[0]),
                    "b_key": key[1],
                    "state": ingests[last[key]].task.state.value,
                    "updated_at": c.timestamp(ingests[last[key]].received_at),
                }
                for key in touch
            ],
            returning=True,
        )
        id_of: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
        for key, row in [*zip(keys, inserted, strict=True), *zip(touch, touched, strict=True)]:
            if row is not None:
                id_of[key] = _uuid(c.uuid_out(row[0]))
        return [id_of[(idea_ids[k], ingest.task.key)] for k, ingest in enumerate(ingests)]

    def _idea_values(self, draft: IdeaDraft, at: datetime) -> dict[str, Any]:
        c = self._c
        now = c.timestamp(at)
        return {
            "id": c.uuid(draft.id),
            "source": draft.source.value,
            "source_ref": draft.source_ref,
            "repository": draft.repository,
            "title": draft.title,
            "spec": c.json(dict(draft.spec)),
            "priority": draft.priority,
            "state": draft.state.value,
            "paused": c.boolean(False),
            "initiator": draft.initiator,
            "created_at": now,
            "updated_at": now,
        }

    def _task_values(self, ingest: Ingest, idea_id: uuid.UUID) -> dict[str, Any]:
        c, task = self._c, ingest.task
        now = c.timestamp(ingest.received_at)
        return {
            "id": c.uuid(task.id),
            "idea_id": c.uuid(idea_id),
            "key": task.key,
            "title": task.title,
            "stage": task.stage.value,
            "state": task.state.value,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

    def _run_values(self, ingest: Ingest, idea_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any]:
        c, run = self._c, ingest.run
        return {
            "id": c.uuid(run.id),
            "idea_id": c.uuid(idea_id),
            "task_id": c.uuid(task_id),
            "stage": run.stage.value,
            "delivery_id": run.delivery_id,
            "status": run.status.value,
            "executor": run.executor,
            "workflow_name": run.workflow_name,
            "namespace": run.namespace,
            "event_body": run.event_body,
            "raw_event": run.raw_event,
            "created_at": c.timestamp(ingest.received_at),
        }

    # --- run updates ----------------------------------------------------------------------------------------

    def update_run(
        self,
        conn: sa.Connection,
        run_id: uuid.UUID,
        update: RunUpdate,
        event: NewEvent | None,
        messages: Sequence[Message] = (),
    ) -> Run | None:
        updated: Run | None = self.update_run_many(conn, [(run_id, update, event, messages)])[0]
        return updated

    def update_run_many(self, conn: sa.Connection, items: list[tuple[Any, ...]]) -> list[Run | None]:
        """Apply each change in order; None for a change whose run was not in an expected status. An unknown
        run raises :class:`NotFound` (for the whole list: the batch writer then runs each change alone)."""
        changes: list[RunChange] = [(item[0], item[1], item[2], item[3]) for item in items]
        cursor = cursor_of(conn)
        # consecutive changes of the same shape share one statement; shapes alternate rarely
        rows: list[Any] = []
        start = 0
        while start < len(changes):
            statement, values = self._run_update(*changes[start][:2])
            batch = [values]
            end = start + 1
            while end < len(changes):
                other, other_values = self._run_update(*changes[end][:2])
                if other is not statement:
                    break
                batch.append(other_values)
                end += 1
            rows.extend(self._many(cursor, statement.sql, batch, returning=True))
            start = end
        updated: list[Run | None] = []
        timed: list[tuple[NewEvent, datetime]] = []
        outgoing: list[tuple[Message, datetime]] = []
        now = self._clock.now()
        for (run_id, _update, event, messages), row in zip(changes, rows, strict=True):
            if row is None:
                if not self._run_exists(cursor, run_id):
                    raise NotFound(f"run {run_id} does not exist")
                updated.append(None)
                continue
            updated.append(self._run_from_values(row))
            if event is not None:
                timed.append((event, now))
            outgoing.extend((message, now) for message in messages)
        self.enqueue(conn, outgoing)
        self.append_events(conn, timed)
        return updated

    def _run_update(self, run_id: uuid.UUID, update: RunUpdate) -> tuple[Any, dict[str, Any]]:
        c = self._c
        values: dict[str, Any] = {"status": update.status.value}
        for name in ("workflow_name", "namespace", "detail"):
            value = getattr(update, name)
            if value is not None:
                values[name] = value
        for name in ("submitted_at", "finished_at"):
            value = getattr(update, name)
            if value is not None:
                values[name] = c.timestamp(value)
        expected = [s.value for s in update.expected]
        statement = self._q.update_run(tuple(sorted(values)), len(expected))
        values["b_id"] = c.uuid(run_id)
        values.update((f"b_expected_{n}", status) for n, status in enumerate(expected))
        return statement, values

    def _run_exists(self, cursor: Any, run_id: uuid.UUID) -> bool:
        cursor.execute(self._q.run_exists.sql, {"b_id": self._c.uuid(run_id)})
        return cursor.fetchone() is not None

    def _run_from_values(self, row: Sequence[Any]) -> Run:
        c = self._c
        values = dict(zip(runs.c.keys(), row, strict=True))
        for name in ("id", "idea_id", "task_id"):
            values[name] = c.uuid_out(values[name])
        for name in ("created_at", "submitted_at", "finished_at", "started_at", "heartbeat_at"):
            values[name] = c.timestamp_out(values[name])
        if values["artifacts"] is not None:
            values["artifacts"] = c.json_out(values["artifacts"])
        return run_from_row(SimpleNamespace(**values))

    # --- ideas created whole (API, CLI) ---------------------------------------------------------------------

    def create_idea(self, conn: sa.Connection, creation: IdeaCreation) -> Idea:
        draft, at = creation.idea, creation.at
        cursor = cursor_of(conn)
        inserted = self._many(cursor, self._q.insert_idea.sql, [self._idea_values(draft, at)], returning=True)
        if inserted[0] is None:
            raise Conflict(f"an idea from {draft.source.value} {draft.source_ref!r} exists already")
        version = creation.plan_version
        if version is not None:
            conn.execute(sa.update(ideas).where(ideas.c.id == draft.id).values(plan_version=version))
        if creation.plan is not None:
            conn.execute(
                sa.insert(plans).values(
                    idea_id=draft.id,
                    version=1,
                    source=creation.plan.source,
                    markdown=creation.plan.markdown,
                    document=dict(creation.plan.document),
                    created_at=at,
                )
            )
        if creation.approval is not None:
            approval = creation.approval
            conn.execute(
                sa.insert(approvals).values(
                    id=approval.id,
                    idea_id=draft.id,
                    plan_version=approval.plan_version,
                    decision=approval.decision,
                    decided_by=approval.decided_by,
                    reason=approval.reason,
                    created_at=at,
                )
            )
        if creation.tasks:
            insert_tasks(conn, draft.id, creation.tasks, at=at, plan_version=version, priority=draft.priority)
        self.enqueue(conn, [(message, at) for message in creation.messages])
        self.append_events(conn, [(event, at) for event in creation.events])
        return new_idea(draft, at, plan_version=version)

    # --- run reports ----------------------------------------------------------------------------------------

    def report_run(self, conn: sa.Connection, report: RunReport) -> ReportResult:
        c = self._c
        delivery_id = report_delivery_id(report.run_id, report.key)
        cursor = cursor_of(conn)
        _, _, stored = self._claim(conn, cursor, [_Claim(REPORT_SOURCE, delivery_id, report.received_at)])
        if stored:
            return ReportResult(True, stored[0], None)
        query = sa.select(runs).where(runs.c.id == report.run_id)
        if self._postgres:
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"run {report.run_id} does not exist")
        before = run_from_row(row)
        changes = report_changes(before, report)
        if changes:
            conn.execute(sa.update(runs).where(runs.c.id == report.run_id).values(**changes))
        if report.tokens_in or report.tokens_out or report.cost_usd:
            conn.execute(
                sa.update(ideas)
                .where(ideas.c.id == before.idea_id)
                .values(
                    tokens_in=ideas.c.tokens_in + report.tokens_in,
                    tokens_out=ideas.c.tokens_out + report.tokens_out,
                    cost_usd=ideas.c.cost_usd + report.cost_usd,
                )
            )
        version = None
        if report.plan is not None:
            latest = conn.execute(
                sa.select(sa.func.max(plans.c.version)).where(plans.c.idea_id == before.idea_id)
            ).scalar()
            version = int(latest or 0) + 1
            conn.execute(
                sa.insert(plans).values(
                    idea_id=before.idea_id,
                    version=version,
                    source=report.plan.source,
                    markdown=report.plan.markdown,
                    document=dict(report.plan.document),
                    created_at=report.received_at,
                )
            )
        after = dataclasses.replace(before, **changes) if changes else before
        outcome = ReportOutcome(after, before.status, after.status != before.status, version)
        effects = report.effects(outcome)
        self._many(
            cursor,
            self._q.answer_delivery.sql,
            [
                {
                    "b_source": REPORT_SOURCE,
                    "b_delivery_id": delivery_id,
                    "response": c.json(dict(effects.response)),
                }
            ],
            returning=False,
        )
        self.enqueue(conn, [(message, report.received_at) for message in effects.messages])
        self.append_events(conn, [(event, report.received_at) for event in effects.events])
        return ReportResult(False, effects.response, outcome, len(effects.messages))

    # --- the outbox and leases -------------------------------------------------------------------------

    def enqueue(self, conn: sa.Connection, outgoing: Sequence[tuple[Message, datetime]]) -> None:
        """Put messages in the outbox, in order, inside the caller's transaction."""
        self._many(
            cursor_of(conn),
            self._q.insert_outbox.sql,
            [self._outbox_values(message, at) for message, at in outgoing],
            returning=False,
        )

    def enqueue_now(self, conn: sa.Connection, messages: Sequence[Message]) -> None:
        self.enqueue_many(conn, [(messages,)])

    def enqueue_many(self, conn: sa.Connection, items: list[tuple[Any, ...]]) -> list[None]:
        """The set form of :meth:`enqueue_now`: every batch's messages, in order, in one statement."""
        now = self._clock.now()
        self.enqueue(conn, [(message, now) for item in items for message in item[0]])
        return [None] * len(items)

    def _outbox_values(self, message: Message, at: datetime) -> dict[str, Any]:
        c = self._c
        return {
            "topic": message.topic,
            "key": outbox_key(message.key),
            "headers": c.json([[name, base64.b64encode(value).decode()] for name, value in message.headers]),
            "payload": message.value,
            "created_at": c.timestamp(at),
        }

    def pending_outbox(self, conn: sa.Connection, limit: int, after_id: int) -> list[OutboxEntry]:
        statement = self._q.pending_outbox
        cursor = cursor_of(conn)
        cursor.execute(statement.sql, statement.params({"b_limit": limit, "b_after": after_id}))
        return [outbox_entry(row, self._c) for row in cursor.fetchall()]

    def outbox_backlog(self, conn: sa.Connection) -> OutboxBacklog:
        statement = self._q.outbox_backlog
        cursor = cursor_of(conn)
        cursor.execute(statement.sql, statement.defaults)
        count, oldest = cursor.fetchone()
        return OutboxBacklog(int(count or 0), self._c.timestamp_out(oldest))

    def mark_published(self, conn: sa.Connection, entry_ids: Sequence[int], at: datetime) -> None:
        published_at = self._c.timestamp(at)
        if self._postgres:  # one statement, one round trip
            statement = self._q.mark_many_published
            cursor_of(conn).execute(statement.sql, {"b_ids": list(entry_ids), "published_at": published_at})
            return
        self._many(
            cursor_of(conn),
            self._q.mark_published.sql,
            [{"b_id": entry_id, "published_at": published_at} for entry_id in entry_ids],
            returning=False,
        )

    def prune_outbox(self, conn: sa.Connection, published_before: datetime) -> int:
        cursor = cursor_of(conn)
        cursor.execute(self._q.prune_outbox.sql, {"b_before": self._c.timestamp(published_before)})
        return int(cursor.rowcount)

    def acquire_lease(
        self, conn: sa.Connection, name: str, holder: str, now: datetime, until: datetime
    ) -> bool:
        q, c = self._q, self._c
        cursor = cursor_of(conn)
        cursor.execute(q.claim_lease.sql, {"name": name, "holder": holder, "expires_at": c.timestamp(until)})
        if cursor.fetchone() is not None:
            return True
        cursor.execute(
            q.renew_lease.sql,
            {
                "b_name": name,
                "b_holder": holder,
                "b_now": c.timestamp(now),
                "holder": holder,
                "expires_at": c.timestamp(until),
            },
        )
        return cursor.fetchone() is not None

    # --- the audit chain ------------------------------------------------------------------------------------

    def append_event(self, conn: sa.Connection, new: NewEvent) -> Event:
        return self.append_now(conn, [(new, self._clock.now())])[0]

    def append_events(self, conn: sa.Connection, timed: list[tuple[NewEvent, datetime]]) -> None:
        """Append events: at the end of the batch when one is collecting them (:class:`ChainHooks`), else
        now."""
        pending: list[tuple[NewEvent, datetime]] | None = conn.info.get(_PENDING_EVENTS)
        if pending is not None:
            pending.extend(timed)
        else:
            self.append_now(conn, timed)

    def lock_chain(self, conn: sa.Connection, *, remember: bool) -> None:
        """Lock the chain's head until the transaction ends (PostgreSQL; SQLite's writer lock is global).
        With ``remember`` the head is kept for this transaction's appends, which then need not read it
        again (no savepoint may undo an append in between: the optimistic pass only)."""
        if self._postgres:
            q = self._q
            cursor = cursor_of(conn)
            cursor.execute(q.lock_chain_head.sql, q.lock_chain_head.defaults)
            head = cursor.fetchone()
            if remember:
                conn.info[_CHAIN_HEAD] = (head[0], head[1])

    def append_now(self, conn: sa.Connection, timed: list[tuple[NewEvent, datetime]]) -> list[Event]:
        """Seal and insert events after the chain's head, which stays locked until commit."""
        if not timed:
            return []
        q, c = self._q, self._c
        cursor = cursor_of(conn)
        remembered: tuple[int, str] | None = conn.info.get(_CHAIN_HEAD)
        if remembered is not None:
            seq, prev_hash = remembered
        else:
            cursor.execute(q.lock_chain_head.sql, q.lock_chain_head.defaults)
            seq, prev_hash = cursor.fetchone()
        sealed: list[Event] = []
        for event, created_at in timed:
            seq += 1
            sealed.append(seal(event, seq=seq, prev_hash=prev_hash, created_at=created_at))
            prev_hash = sealed[-1].hash
        self._many(
            cursor,
            q.insert_event.sql,
            [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "actor": e.actor,
                    "idea_id": c.uuid(e.idea_id),
                    "task_id": c.uuid(e.task_id),
                    "run_id": c.uuid(e.run_id),
                    "payload": c.json(e.payload),
                    "created_at": c.timestamp(e.created_at),
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in sealed
            ],
            returning=False,
        )
        cursor.execute(q.move_chain_head.sql, q.move_chain_head.params({"seq": seq, "hash": prev_hash}))
        if remembered is not None:
            conn.info[_CHAIN_HEAD] = (seq, prev_hash)
        return sealed


class ChainHooks(BatchHooks):
    """Lock the audit chain's head first in every batch that may append events, and collect the optimistic
    pass's events to append them together before the commit (one insert and one head update per batch).

    Taking the head's lock before anything else orders every such writer of the database, in any process,
    on that one lock: a batch never holds a row another batch waits for while it waits for the head, so
    batches cannot deadlock each other. Batches of operations that append no event (outbox marks, leases,
    pruning) touch rows no event-writing batch of another process waits for, and skip the lock.
    """

    def __init__(self, writes: Writes, chain_ops: Collection[Operation | SetOperation]) -> None:
        self._writes = writes
        self._chain_ops = {id(op) for op in chain_ops}

    def begin(self, conn: sa.Connection, ops: Sequence[Operation | SetOperation], *, collect: bool) -> None:
        if any(id(op) in self._chain_ops for op in ops):
            self._writes.lock_chain(conn, remember=collect)
        if collect:
            conn.info[_PENDING_EVENTS] = []

    def before_commit(self, conn: sa.Connection) -> None:
        try:
            self._writes.append_now(conn, conn.info.pop(_PENDING_EVENTS))
        finally:
            conn.info.pop(_CHAIN_HEAD, None)

    def discard(self, conn: sa.Connection) -> None:
        conn.info.pop(_PENDING_EVENTS, None)
        conn.info.pop(_CHAIN_HEAD, None)


def find_delivery(conn: sa.Connection, source: str, delivery_id: str) -> Mapping[str, Any] | None:
    statement = statements(conn.dialect.name).find_delivery
    cursor = cursor_of(conn)
    cursor.execute(statement.sql, {"b_source": source, "b_delivery_id": delivery_id})
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    response: Mapping[str, Any] = Codec(conn.dialect.name).json_out(row[0])
    return response


def outbox_entry(row: Sequence[Any], codec: Codec) -> OutboxEntry:
    """An outbox row (id, topic, key, headers, payload, created_at) as an entry."""
    entry_id, topic, key, headers, payload, created_at = row
    pairs = codec.json_out(headers)
    at = codec.timestamp_out(created_at)
    assert at is not None
    return OutboxEntry(
        id=int(entry_id),
        message=Message(
            topic=topic,
            value=bytes(payload),
            key=key.encode() if key is not None else None,
            headers=tuple((str(name), base64.b64decode(value)) for name, value in pairs),
        ),
        created_at=at,
    )


class Claim(Protocol):
    """What claims an inbox key: an ingest, a delivery, a run's report."""

    @property
    def source(self) -> str: ...

    @property
    def delivery_id(self) -> str: ...

    @property
    def received_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class _Claim:
    source: str
    delivery_id: str
    received_at: datetime


def _idea(draft: IdeaDraft | None) -> IdeaDraft:
    assert draft is not None
    return draft


def _in_order(
    claims: Sequence[Claim],
    first_of: Mapping[tuple[str, str], int],
    results: Mapping[int, T],
    repeat: Callable[[T], T],
) -> list[T]:
    """Each claim's result: its own when it was the first of its delivery id, else a replay of the first."""
    ordered: list[T] = []
    for n, claim in enumerate(claims):
        first = first_of[(claim.source, claim.delivery_id)]
        ordered.append(results[n] if first == n else repeat(results[first]))
    return ordered


def _uuid(value: uuid.UUID | None) -> uuid.UUID:
    assert value is not None
    return value
