"""Blobs: what their octets need before they go out as a multi-line body (POP3 RETR).

Revision ID: 0008
Revises: 0007
Frozen, like 0001: the column is spelled out here, not imported from schema.py.

`line_form` (schema.blobs): NULL = not known (rows written before this migration, content
streamed to a spool file); 0 = some LF has no CR before it (the reader normalises the line
ends); 1 = every line ends in CRLF but some line starts with "." (the reader dot-stuffs);
2 = every line ends in CRLF and none starts with ".": the stored octets are their own wire form.
`dot_lines`: with 1, the offsets of the lines that start with "." (little-endian 32-bit), so the
reader stuffs them without searching; NULL when there were too many to keep.
Existing rows stay NULL: the reader checks their content as it always did, so no row is read or
rewritten by the migration (a mailbox store can hold gigabytes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
# Written while 0007 (another change) was in progress: re-chained onto it when both land.
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("line_form", sa.SmallInteger(), nullable=True))
    op.add_column("blobs", sa.Column("dot_lines", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("dot_lines")
        batch.drop_column("line_form")
