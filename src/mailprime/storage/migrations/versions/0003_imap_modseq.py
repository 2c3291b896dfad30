"""IMAP: mailbox subscriptions and RFC 7162 modification sequences.

Revision ID: 0003
Revises: 0002
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("subscribed", sa.Boolean(), nullable=False,
                                         server_default=sa.true()))
    # Raised by every change in the mailbox; messages carry the value of their last change.
    op.add_column("mailboxes", sa.Column("highestmodseq", sa.BigInteger(), nullable=False,
                                         server_default="1"))
    # The modseq of the latest expunge: tells a session whether it must re-read the UID list.
    op.add_column("mailboxes", sa.Column("expunged_modseq", sa.BigInteger(), nullable=False,
                                         server_default="0"))
    op.add_column("mailbox_messages", sa.Column("modseq", sa.BigInteger(), nullable=False,
                                                server_default="1"))
    op.create_index("ix_mailbox_messages_mailbox_id_modseq", "mailbox_messages",
                    ["mailbox_id", "modseq"])


def downgrade() -> None:
    op.drop_index("ix_mailbox_messages_mailbox_id_modseq", table_name="mailbox_messages")
    with op.batch_alter_table("mailbox_messages") as batch:
        batch.drop_column("modseq")
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("expunged_modseq")
        batch.drop_column("highestmodseq")
        batch.drop_column("subscribed")
