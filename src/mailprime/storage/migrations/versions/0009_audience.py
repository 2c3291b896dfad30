"""Audience: contacts, lists, memberships, consent ledger, segments (issue 5).

Revision ID: 0009
Revises: 0008
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass  # the tables are being added (issue 5, first slice)


def downgrade() -> None:
    pass
