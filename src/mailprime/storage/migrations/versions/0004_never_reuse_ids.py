"""Ids that are never reused on SQLite: accounts, mailboxes, blobs, queue recipients.

Revision ID: 0004
Revises: 0003

Without AUTOINCREMENT, SQLite gives a new row max(rowid) + 1, so deleting the newest row hands
its id to the next insert. These ids outlive their rows in memory: an IMAP session holds its
account's and mailbox's ids, the content cache is keyed by blob id, a delivery worker holds its
recipients' ids. A reused id would show one account's mail to another. AUTOINCREMENT makes SQLite
keep a high-water mark (sqlite_sequence); PostgreSQL sequences never reuse, so only SQLite
changes. SQLite cannot add AUTOINCREMENT in place: each table is rebuilt by copying (batch mode),
with foreign key enforcement switched off around the migration (storage.sql.migrate).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("accounts", "mailboxes", "blobs", "queue_recipients")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": False}):
            pass
