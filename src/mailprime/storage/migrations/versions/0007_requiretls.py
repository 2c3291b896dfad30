"""REQUIRETLS (RFC 8689): the two TLS flags a queued message carries to delivery.

Revision ID: 0007
Revises: 0006
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.

`require_tls`: the message came with MAIL FROM ... REQUIRETLS (RFC 8689 4.1: the server MUST tag
it), so every hop must be verified TLS that offers REQUIRETLS again (4.2.1). `tls_optional`: it
came with "TLS-Required: No" and without REQUIRETLS (RFC 8689 3, 4.2.2), so delivery ignores
the recipient's MTA-STS policy. Rows queued before this migration read as neither: they were
accepted under the rules of their day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("queue_messages", sa.Column("require_tls", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))
    op.add_column("queue_messages", sa.Column("tls_optional", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("queue_messages") as batch:
        batch.drop_column("tls_optional")
        batch.drop_column("require_tls")
