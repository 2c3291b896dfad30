"""The queue id an API request with an Idempotency-Key sends under, chosen when it claims the key.

Revision ID: 0014
Revises: 0013
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.

Written before the message is accepted, so a retry after a crash between the accept and the
stored response finds the message under that id (web.messages_api) instead of sending again.
Records written before this migration have none: they are at most 24 hours old, and a retry of
one behaves as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("queue_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("queue_id")
