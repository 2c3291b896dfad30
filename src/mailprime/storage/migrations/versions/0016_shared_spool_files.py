"""Blobs may share a spool file: a batch of queued messages (a campaign's) is written as one
file, once, instead of twice through the database (its WAL, then the checkpoint's copy), and
each row names the file and where its content starts in it (storage/sql/batch_file.py).

Revision ID: 0016
Revises: 0015
Frozen, like 0001: the columns are spelled out here, not imported from schema.py.

`file_offset` NULL is what every existing row means: the file, if any, is the blob's alone.
The partial index on `path` answers "does another row still name this file" when a blob goes.
Adding a nullable column is a plain ALTER TABLE on both databases (no table copy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

_INDEX = "ix_blobs_path"
_WHERE = sa.text("path IS NOT NULL")


def upgrade() -> None:
    op.add_column("blobs", sa.Column("file_offset", sa.BigInteger(), nullable=True))
    op.create_index(_INDEX, "blobs", ["path"], sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    # Without the offsets, a shared file's rows would each read the whole file.
    shared = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM blobs WHERE file_offset IS NOT NULL")).scalar_one()
    if shared:
        raise RuntimeError(f"{shared} blobs live in shared spool files: deliver or delete "
                           "those messages before downgrading below 0016")
    op.drop_index(_INDEX, table_name="blobs")
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch operation would copy the
    # table and lose its AUTOINCREMENT (migration 0004: ids never reused).
    op.drop_column("blobs", "file_offset")
