"""scheduling: tasks carry their idea's priority; indexes of ready and active tasks replace the index on
(state, updated_at), which SQLite's planner preferred to them (then sorting every ready task)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("priority", sa.SmallInteger(), nullable=False, server_default=sa.text("2"))
        )
    op.execute("UPDATE tasks SET priority = (SELECT priority FROM ideas WHERE ideas.id = tasks.idea_id)")
    op.drop_index("ix_tasks_state_updated_at", table_name="tasks")
    op.create_index(
        "ix_tasks_ready",
        "tasks",
        ["priority", "created_at", "position", "id"],
        postgresql_where=sa.text("state = 'ready'"),
        sqlite_where=sa.text("state = 'ready'"),
    )
    op.create_index(
        "ix_tasks_active",
        "tasks",
        ["idea_id"],
        postgresql_where=sa.text("state IN ('queued', 'running') AND plan_version IS NOT NULL"),
        sqlite_where=sa.text("state IN ('queued', 'running') AND plan_version IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_active", table_name="tasks")
    op.drop_index("ix_tasks_ready", table_name="tasks")
    op.create_index("ix_tasks_state_updated_at", "tasks", ["state", "updated_at"])
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("priority")
