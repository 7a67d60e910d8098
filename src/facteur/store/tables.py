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
    #: the approved plan's version: the one tasks are built from (None until a plan is approved)
    sa.Column("plan_version", sa.Integer),
    #: usage attributed to the idea: the sum of its runs'
    sa.Column("tokens_in", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("tokens_out", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default=sa.text("0")),
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
    # from the plan (plan tasks; stage-level tasks keep the defaults)
    sa.Column("description", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("acceptance_criteria", Json),
    sa.Column("paths", Json),
    sa.Column("heavy", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("plan_version", sa.Integer),
    #: the task's place in its plan: display order, and the last key of dispatch order (ix_tasks_ready)
    sa.Column("position", sa.Integer),
    #: a failed task waits until then before it is ready again (back-off)
    sa.Column("not_before", UtcDateTime),
    #: the scheduler replica that claimed the task, and until when the claim holds
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claim_expires_at", UtcDateTime),
    #: the idea's priority (0 highest), so that ready tasks are ordered by an index
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default=sa.text("2")),
    sa.UniqueConstraint("idea_id", "key"),
)
_READY = tasks.c.state == "ready"
#: the scheduler's walk: ready tasks in dispatch order, without reading the others
sa.Index(
    "ix_tasks_ready",
    tasks.c.priority,
    tasks.c.created_at,
    tasks.c.position,
    tasks.c.id,
    postgresql_where=_READY,
    sqlite_where=_READY,
)
_ACTIVE = sa.and_(tasks.c.state.in_(["queued", "running"]), tasks.c.plan_version.is_not(None))
#: what counts against the scheduler's limits
sa.Index("ix_tasks_active", tasks.c.idea_id, postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)

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
    #: which attempt of its task this run is (1 for the first)
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
    # what the run reports through its callbacks
    sa.Column("started_at", UtcDateTime),
    sa.Column("heartbeat_at", UtcDateTime),
    sa.Column("tokens_in", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("tokens_out", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default=sa.text("0")),
    sa.Column("summary", sa.Text),
    sa.Column("artifacts", Json),
    sa.Column("pull_request", sa.String(500)),
    sa.Column("branch", sa.String(255)),
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

#: every version of an idea's plan; ``ideas.plan_version`` names the approved one
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("idea_id", sa.Uuid, sa.ForeignKey("ideas.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    #: where it came from: ``run`` (a planning run's callback), ``comment`` (intake), ``api``
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("markdown", sa.Text, nullable=False),
    #: the parsed plan (tasks and sections), as docs/plans.md's JSON form
    sa.Column("document", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

#: decisions on plans: by people (API, CLI, ``execute plan``) or automatic when no approval is required
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("idea_id", sa.Uuid, sa.ForeignKey("ideas.id", ondelete="CASCADE"), nullable=False),
    sa.Column("plan_version", sa.Integer, nullable=False),
    #: ``approved``, ``rejected`` or ``automatic``
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index(None, "idea_id", "created_at"),
)

#: named leases: who holds a singleton duty (the outbox relay, …) among replicas, and until when
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
)
