"""Initial schema: directory, mail store, outbound queue, event log.

Revision ID: 0001
Revises: -
Frozen: this file spells the tables out instead of importing storage/sql/schema.py, so that it
keeps creating exactly this schema when schema.py moves on (tests compare the two at head).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY auto-increments.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "domains",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_domains"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("address_key", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("address_key", name="uq_accounts_address_key"),
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(320), nullable=False),
        sa.Column("destination", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_aliases"),
        sa.UniqueConstraint("source", "destination", name="uq_aliases_source_destination"),
    )
    op.create_table(
        "blobs",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("special_use", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name="fk_mailboxes_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_mailboxes"),
        sa.UniqueConstraint("account_id", "name", name="uq_mailboxes_account_id_name"),
    )
    op.create_table(
        "mailbox_messages",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("blob_id", _big_id(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("internal_date", ts, nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE",
                                name="fk_mailbox_messages_mailbox_id_mailboxes"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_mailbox_messages_blob_id_blobs"),
        sa.PrimaryKeyConstraint("id", name="pk_mailbox_messages"),
        sa.UniqueConstraint("mailbox_id", "uid", name="uq_mailbox_messages_mailbox_id_uid"),
    )
    op.create_index("ix_mailbox_messages_blob_id", "mailbox_messages", ["blob_id"])
    op.create_table(
        "queue_messages",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("blob_id", _big_id(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("dsn_ret", sa.String(8), nullable=True),
        sa.Column("dsn_envid", sa.Text(), nullable=True),
        sa.Column("smtputf8", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_queue_messages_blob_id_blobs"),
        sa.PrimaryKeyConstraint("id", name="pk_queue_messages"),
    )
    op.create_index("ix_queue_messages_blob_id", "queue_messages", ["blob_id"])
    op.create_table(
        "queue_recipients",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("last_reply", sa.Text(), nullable=False),
        sa.Column("notify", sa.String(64), nullable=False),
        sa.Column("orcpt", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", ts, nullable=True),
        sa.ForeignKeyConstraint(["queue_id"], ["queue_messages.id"], ondelete="CASCADE",
                                name="fk_queue_recipients_queue_id_queue_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_queue_recipients"),
    )
    op.create_index("ix_queue_recipients_status_next_attempt_at", "queue_recipients",
                    ["status", "next_attempt_at"])
    op.create_index("ix_queue_recipients_queue_id_domain", "queue_recipients", ["queue_id", "domain"])
    op.create_index("ix_queue_recipients_lease_owner", "queue_recipients", ["lease_owner"])
    op.create_table(
        "events",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attrs", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_queue_id", "events", ["queue_id"])


def downgrade() -> None:
    for table in ("events", "queue_recipients", "queue_messages", "mailbox_messages", "mailboxes",
                  "blobs", "aliases", "accounts", "domains"):
        op.drop_table(table)
