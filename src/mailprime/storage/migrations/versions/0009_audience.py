"""Audience: contacts, lists, memberships, consent ledger, segments (issue 5).

Revision ID: 0009
Revises: 0008
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "contacts",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("email_hash", sa.String(80), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("attributes", json, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("last_opened_at", ts, nullable=True),
        sa.Column("last_clicked_at", ts, nullable=True),
        sa.UniqueConstraint("email_key", name="uq_contacts_email_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_contacts_domain", "contacts", ["domain"])
    op.create_table(
        "mailing_lists",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("opt_in", sa.String(8), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("name", name="uq_mailing_lists_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "memberships",
        sa.Column("contact_id", big, nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "list_id", name="pk_memberships"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE",
                                name="fk_memberships_contact_id_contacts"),
        sa.ForeignKeyConstraint(["list_id"], ["mailing_lists.id"], ondelete="CASCADE",
                                name="fk_memberships_list_id_mailing_lists"),
    )
    op.create_index("ix_memberships_list_id_contact_id", "memberships", ["list_id", "contact_id"])
    op.create_table(
        "consent_ledger",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("list_id", sa.Integer(), nullable=True),
        sa.Column("purpose", sa.String(200), nullable=False, server_default=""),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("wording_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("at", ts, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_consent_ledger_email", "consent_ledger", ["email"])
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("name", name="uq_segments_name"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in ("segments", "consent_ledger", "memberships", "mailing_lists", "contacts"):
        op.drop_table(table)
