"""Deliverability: the suppression list, soft-bounce counts, source-address usage per day,
MTA-STS policies and TLS report counts.

Revision ID: 0006
Revises: 0005
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False, server_default=""),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("address", "scope", name="pk_suppressions"),
    )
    op.create_index("ix_suppressions_created_at", "suppressions", ["created_at"])
    op.create_table(
        "soft_bounces",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False, server_default=""),
        sa.Column("at", ts, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_soft_bounces_address_scope_at", "soft_bounces", ["address", "scope", "at"])
    op.create_table(
        "ip_usage",
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD, UTC
        sa.Column("sent", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("ip", "day", name="pk_ip_usage"),
    )
    op.create_table(
        "mta_sts_policies",
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("fetched_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("domain", name="pk_mta_sts_policies"),
    )
    op.create_table(
        "tls_results",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("policy_type", sa.String(32), nullable=False),
        sa.Column("result_type", sa.String(64), nullable=False),
        sa.Column("receiving_mx", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("day", "policy_domain", "policy_type", "result_type",
                                "receiving_mx", name="pk_tls_results"),
    )


def downgrade() -> None:
    for table in ("tls_results", "mta_sts_policies", "ip_usage", "soft_bounces", "suppressions"):
        op.drop_table(table)
