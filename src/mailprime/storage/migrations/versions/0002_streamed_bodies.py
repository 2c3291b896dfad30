"""Streamed bodies: a blob's prefix before its spool file, and the 8-bit flag of queued content.

Revision ID: 0002
Revises: 0001
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Octets stored before the spool file's content (trace headers added after the body streamed).
    op.add_column("blobs", sa.Column("prefix", sa.LargeBinary(), nullable=True))
    # Whether the content has an octet above 127 (RFC 6152 BODY=8BITMIME when relaying). Rows
    # queued before this migration read as 7-bit: they were sent as is, as Postfix does.
    op.add_column("queue_messages", sa.Column("body_8bit", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("queue_messages") as batch:
        batch.drop_column("body_8bit")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("prefix")
