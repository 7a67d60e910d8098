"""The write path's statements: SQLAlchemy Core constructs compiled once per dialect (see
:mod:`facteur.store.compiled`), so that both databases share one source of SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from facteur.store.compiled import Compiled, dialect_for
from facteur.store.tables import deliveries, event_chain, events, ideas, leases, outbox, runs, tasks


class Statements:
    """The write path's statements, compiled once per dialect (see :mod:`facteur.store.compiled`)."""

    def __init__(self, name: str) -> None:
        dialect = dialect_for(name)
        insert: Any = postgresql.insert if name == "postgresql" else sqlite.insert

        def compiled(statement: sa.ClauseElement, columns: Sequence[str] = ()) -> Compiled:
            return Compiled(statement, dialect, columns)

        self._dialect = dialect
        self.claim_delivery = compiled(
            insert(deliveries).on_conflict_do_nothing().returning(deliveries.c.delivery_id),
            ["source", "delivery_id", "received_at"],
        )
        self.alias_delivery = compiled(
            insert(deliveries).on_conflict_do_nothing(),
            ["source", "delivery_id", "received_at", "response"],
        )
        self.find_delivery = compiled(
            sa.select(deliveries.c.response).where(
                deliveries.c.source == sa.bindparam("b_source"),
                deliveries.c.delivery_id == sa.bindparam("b_delivery_id"),
            )
        )
        self.answer_delivery = compiled(
            sa.update(deliveries).where(
                deliveries.c.source == sa.bindparam("b_source"),
                deliveries.c.delivery_id == sa.bindparam("b_delivery_id"),
            ),
            ["response"],
        )
        self.insert_idea = compiled(
            insert(ideas).on_conflict_do_nothing().returning(ideas.c.id),
            [
                "id",
                "source",
                "source_ref",
                "repository",
                "title",
                "spec",
                "priority",
                "state",
                "paused",
                "initiator",
                "created_at",
                "updated_at",
            ],
        )
        self.find_idea = compiled(
            sa.select(ideas.c.id).where(
                ideas.c.source == sa.bindparam("b_source"), ideas.c.source_ref == sa.bindparam("b_source_ref")
            )
        )
        self.insert_task = compiled(
            insert(tasks).on_conflict_do_nothing().returning(tasks.c.id),
            ["id", "idea_id", "key", "title", "stage", "state", "attempts", "created_at", "updated_at"],
        )
        self.touch_task = compiled(
            sa.update(tasks)
            .where(tasks.c.idea_id == sa.bindparam("b_idea_id"), tasks.c.key == sa.bindparam("b_key"))
            .returning(tasks.c.id),
            ["state", "updated_at"],
        )
        self.insert_run = compiled(
            sa.insert(runs),
            [
                "id",
                "idea_id",
                "task_id",
                "stage",
                "delivery_id",
                "status",
                "executor",
                "workflow_name",
                "namespace",
                "event_body",
                "raw_event",
                "created_at",
            ],
        )
        self.lock_chain_head = compiled(
            sa.select(event_chain.c.seq, event_chain.c.hash).where(event_chain.c.id == 1).with_for_update()
        )
        self.run_exists = compiled(sa.select(runs.c.id).where(runs.c.id == sa.bindparam("b_id")))
        self.insert_event = compiled(sa.insert(events), list(events.c.keys()))
        self.move_chain_head = compiled(sa.update(event_chain).where(event_chain.c.id == 1), ["seq", "hash"])
        # the outbox and leases
        self.insert_outbox = compiled(sa.insert(outbox), ["topic", "key", "headers", "payload", "created_at"])
        self.pending_outbox = compiled(
            sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.headers, outbox.c.payload)
            .add_columns(outbox.c.created_at)
            .where(outbox.c.published_at.is_(None), outbox.c.id > sa.bindparam("b_after"))
            .order_by(outbox.c.id)
            .limit(sa.bindparam("b_limit"))
        )
        self.mark_published = compiled(
            sa.update(outbox).where(outbox.c.id == sa.bindparam("b_id")), ["published_at"]
        )
        #: PostgreSQL: all of a batch in one statement (``id = ANY(array)``)
        self.mark_many_published = compiled(
            sa.update(outbox).where(outbox.c.id == sa.func.any(sa.bindparam("b_ids"))), ["published_at"]
        )
        self.outbox_backlog = compiled(
            sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                outbox.c.published_at.is_(None)
            )
        )
        self.prune_outbox = compiled(
            sa.delete(outbox).where(
                outbox.c.published_at.is_not(None), outbox.c.published_at < sa.bindparam("b_before")
            )
        )
        self.claim_lease = compiled(
            insert(leases).on_conflict_do_nothing().returning(leases.c.name), ["name", "holder", "expires_at"]
        )
        self.renew_lease = compiled(
            sa.update(leases)
            .where(
                leases.c.name == sa.bindparam("b_name"),
                sa.or_(
                    leases.c.holder == sa.bindparam("b_holder"), leases.c.expires_at < sa.bindparam("b_now")
                ),
            )
            .returning(leases.c.name),
            ["holder", "expires_at"],
        )
        self._update_run: dict[tuple[tuple[str, ...], int], Compiled] = {}

    def update_run(self, columns: tuple[str, ...], expected: int) -> Compiled:
        """``UPDATE runs SET <columns> WHERE id = :b_id [AND status IN (<expected> values)] RETURNING *``."""
        key = (columns, expected)
        statement = self._update_run.get(key)
        if statement is None:
            where = [runs.c.id == sa.bindparam("b_id")]
            if expected:
                where.append(runs.c.status.in_([sa.bindparam(f"b_expected_{n}") for n in range(expected)]))
            statement = Compiled(sa.update(runs).where(*where).returning(*runs.c), self._dialect, columns)
            self._update_run[key] = statement
        return statement


_STATEMENTS: dict[str, Statements] = {}


def statements(dialect: str) -> Statements:
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = Statements(dialect)
    return _STATEMENTS[dialect]
