"""Campaigns and their per-recipient send records (issue 5).

Revision ID: 0012
Revises: 0011
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "campaigns",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("from_address", sa.String(320), nullable=False),
        sa.Column("from_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("reply_to", sa.String(320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rate_per_minute", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("scheduled_at", ts, nullable=True),
        sa.Column("track_opens", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("track_clicks", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("postal_address", sa.Text(), nullable=False, server_default=""),
        sa.Column("pause_reason", sa.String(16), nullable=True),
        sa.Column("pause_detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("started_at", ts, nullable=True),
        sa.Column("finished_at", ts, nullable=True),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.UniqueConstraint("name", name="uq_campaigns_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_table(
        "campaign_lists",
        sa.Column("campaign_id", big, nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("campaign_id", "list_id", name="pk_campaign_lists"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE",
                                name="fk_campaign_lists_campaign_id_campaigns"),
    )
    op.create_table(
        "campaign_sends",
        sa.Column("campaign_id", big, nullable=False),
        sa.Column("contact_id", big, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("at", ts, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "contact_id", name="pk_campaign_sends"),
        sa.UniqueConstraint("queue_id", name="uq_campaign_sends_queue_id"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE",
                                name="fk_campaign_sends_campaign_id_campaigns"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE",
                                name="fk_campaign_sends_contact_id_contacts"),
    )
    op.create_index("ix_campaign_sends_campaign_id_status", "campaign_sends",
                    ["campaign_id", "status"])
    op.create_index("ix_campaign_sends_contact_id", "campaign_sends", ["contact_id"])


def downgrade() -> None:
    op.drop_table("campaign_sends")
    op.drop_table("campaign_lists")
    op.drop_index("ix_campaigns_status", table_name="campaigns")
    op.drop_table("campaigns")
