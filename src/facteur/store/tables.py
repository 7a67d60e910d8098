"""SQLAlchemy Core table definitions: the schema the migrations must produce (a test compares them)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from facteur.store.types import UtcDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


Json: Any = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

ideas = sa.Table(
    "ideas",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("source_ref", sa.String(300), nullable=False),
    sa.Column("repository", sa.String(200), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("spec", Json, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("initiator", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("source", "source_ref"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("idea_id", sa.Uuid, sa.ForeignKey("ideas.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(100), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("idea_id", "key"),
    sa.Index(None, "state", "updated_at"),
)

task_dependencies = sa.Table(
    "task_dependencies",
    metadata,
    sa.Column("task_id", sa.Uuid, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("depends_on_task_id", sa.Uuid, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("idea_id", sa.Uuid, sa.ForeignKey("ideas.id", ondelete="CASCADE"), nullable=False),
    sa.Column("task_id", sa.Uuid, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("delivery_id", sa.String(255), nullable=False, unique=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("executor", sa.String(32)),
    sa.Column("workflow_name", sa.String(253)),
    sa.Column("namespace", sa.String(253)),
    sa.Column("event_body", sa.LargeBinary, nullable=False),
    sa.Column("raw_event", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("submitted_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("detail", sa.Text),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "task_id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("idea_id", sa.Uuid),
    sa.Column("task_id", sa.Uuid),
    sa.Column("run_id", sa.Uuid),
    sa.Column("payload", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index(None, "idea_id", "seq"),
    sa.Index(None, "run_id", "seq"),
)

#: the head of the audit chain: one row, locked by whoever appends
event_chain = sa.Table(
    "event_chain",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

#: the inbox: one row per external delivery, holding the answer given to it
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("delivery_id", sa.String(255), primary_key=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("response", Json),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("key", sa.String(255)),
    sa.Column("headers", Json, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("published_at", UtcDateTime),
    sa.Index(None, "published_at", "id"),
)
#: what the relay reads: unpublished messages in order, without walking the published ones
sa.Index(
    "ix_outbox_pending",
    outbox.c.id,
    postgresql_where=outbox.c.published_at.is_(None),
    sqlite_where=outbox.c.published_at.is_(None),
)

#: named leases: who holds a singleton duty (the outbox relay, …) among replicas, and until when
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
)
