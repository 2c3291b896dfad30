"""Each queued recipient carries its message's priority, so the delivery claim reads the due
recipients in service order straight from one index instead of joining every pending recipient
with its message and sorting them all (the cost of a claim grew with the queue: ~30 ms with
20,000 recipients queued).

Revision ID: 0015
Revises: 0014
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.

Rows queued before this migration get their message's priority here; the (status,
next_attempt_at) index gives way to (status, priority, next_attempt_at), which serves every
query the old one did (they all start with status).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None

NORMAL = 1  # domain.mail.Priority.NORMAL, frozen here


def upgrade() -> None:
    with op.batch_alter_table("queue_recipients") as batch:
        batch.add_column(sa.Column("priority", sa.SmallInteger(), nullable=False,
                                   server_default=sa.text(str(NORMAL))))
    op.execute("UPDATE queue_recipients SET priority = (SELECT queue_messages.priority FROM "
               "queue_messages WHERE queue_messages.id = queue_recipients.queue_id)")
    op.drop_index("ix_queue_recipients_status_next_attempt_at", table_name="queue_recipients")
    op.create_index("ix_queue_recipients_status_priority_next_attempt_at", "queue_recipients",
                    ["status", "priority", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_queue_recipients_status_priority_next_attempt_at",
                  table_name="queue_recipients")
    op.create_index("ix_queue_recipients_status_next_attempt_at", "queue_recipients",
                    ["status", "next_attempt_at"])
    with op.batch_alter_table("queue_recipients") as batch:
        batch.drop_column("priority")
