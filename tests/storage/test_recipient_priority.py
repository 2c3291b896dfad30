"""Migration 0015: queued recipients carry their message's priority (the delivery claim reads
due recipients in service order from one index). Rows queued before it get their message's
priority, and the claim serves them in that order; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import text

from mailprime.domain.mail import Priority
from mailprime.storage.sql.migrate import alembic_config
from tests.storage.conftest import Backend, backend, pg_databases, pg_session_url  # noqa: F401
from tests.storage.test_contract import sync_engine

T = "2030-01-02 03:04:05"


async def test_recipients_queued_before_0015_keep_their_message_priority(
        backend: Backend) -> None:  # noqa: F811
    url = backend.new_database()
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0014")
            conn.execute(text("INSERT INTO blobs (id, size, data, created_at) "
                              "VALUES (1, 2, :d, :t)"), {"d": b"hi", "t": T})
            for qid, priority in (("bulk", Priority.BULK), ("urgent", Priority.TRANSACTIONAL)):
                conn.execute(text(
                    "INSERT INTO queue_messages (id, sender, blob_id, size, priority, created_at,"
                    " expires_at, smtputf8, source, client) VALUES (:q, '', 1, 2, :p, :t, :t,"
                    " false, 'smtp', '')"), {"q": qid, "p": int(priority), "t": T})
                conn.execute(text(
                    "INSERT INTO queue_recipients (queue_id, address, domain, status, attempts,"
                    " next_attempt_at, last_reply, notify) VALUES (:q, :a, 'x.example',"
                    " 'pending', 0, :t, '', '')"), {"q": qid, "a": f"{qid}@x.example", "t": T})
    finally:
        engine.dispose()
    async with backend.open(url) as store:
        later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(seconds=1)
        jobs = await store.claim_due(later, 1, "w", 60)
        assert [j.message.id for j in jobs] == ["urgent"]  # queued later, served first
        jobs = await store.claim_due(later, 1, "w", 60)
        assert [j.message.id for j in jobs] == ["bulk"]
