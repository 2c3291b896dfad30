"""HTTP API keys (issue 5).

Revision ID: 0011
Revises: 0010
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.
"""

from __future__ import annotations

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass  # the tables are being added (issue 5, first slice)


def downgrade() -> None:
    pass
