"""orchestration: plan versions, approvals, plan tasks' fields, claims and back-off, run reports, usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from facteur.store.types import UtcDateTime

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _usage() -> list[sa.Column[object]]:
    return [
        sa.Column("tokens_in", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default=sa.text("0")),
    ]


def upgrade() -> None:
    with op.batch_alter_table("ideas") as batch:
        batch.add_column(sa.Column("plan_version", sa.Integer(), nullable=True))
        for column in _usage():
            batch.add_column(column)
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=sa.text("''")))
        batch.add_column(sa.Column("acceptance_criteria", Json, nullable=True))
        batch.add_column(sa.Column("paths", Json, nullable=True))
        batch.add_column(sa.Column("heavy", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("plan_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("position", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("not_before", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("claim_expires_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("started_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime(), nullable=True))
        for column in _usage():
            batch.add_column(column)
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("artifacts", Json, nullable=True))
        batch.add_column(sa.Column("pull_request", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("branch", sa.String(length=255), nullable=True))
    op.create_table(
        "plans",
        sa.Column("idea_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=False),
        sa.Column("document", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["idea_id"], ["ideas.id"], name=op.f("fk_plans_idea_id_ideas"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("idea_id", "version", name=op.f("pk_plans")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("idea_id", sa.Uuid(), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["idea_id"], ["ideas.id"], name=op.f("fk_approvals_idea_id_ideas"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(op.f("ix_approvals_idea_id_created_at"), "approvals", ["idea_id", "created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_approvals_idea_id_created_at"), table_name="approvals")
    op.drop_table("approvals")
    op.drop_table("plans")
    with op.batch_alter_table("runs") as batch:
        for name in (
            "branch",
            "pull_request",
            "artifacts",
            "summary",
            "cost_usd",
            "tokens_out",
            "tokens_in",
            "heartbeat_at",
            "started_at",
            "attempt",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("tasks") as batch:
        for name in (
            "claim_expires_at",
            "claimed_by",
            "not_before",
            "position",
            "plan_version",
            "heavy",
            "paths",
            "acceptance_criteria",
            "description",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("ideas") as batch:
        for name in ("cost_usd", "tokens_out", "tokens_in", "plan_version"):
            batch.drop_column(name)
