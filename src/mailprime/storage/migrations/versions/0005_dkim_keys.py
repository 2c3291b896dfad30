"""DKIM signing keys: one row per domain and selector.

Revision ID: 0005
Revises: 0004
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "dkim_keys",
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("selector", sa.String(255), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("retired_at", ts, nullable=True),
        sa.PrimaryKeyConstraint("domain", "selector", name="pk_dkim_keys"),
    )


def downgrade() -> None:
    op.drop_table("dkim_keys")
