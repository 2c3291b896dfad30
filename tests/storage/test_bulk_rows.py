"""The rows the bulk writes put in SQLite (storage.sql.bulk: tuples straight to the driver) are
stored exactly as SQLAlchemy would store the same values: every row of the tables an accept and
a campaign's send rows write is read back through SQLAlchemy, written again through SQLAlchemy
into a fresh database, and the two compared column by column with SQLite's quote() — which
shows the storage class as well as the value (a timestamp's text, 1 and not '1', a BLOB)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from mailprime.domain.audience import ConsentEvidence, ConsentSource, ContactInput, ImportMode
from mailprime.domain.campaigns import CampaignDraft, SendRecord, SendStatus
from mailprime.domain.ids import new_queue_id
from mailprime.domain.mail import Acceptance, DsnNotify, DsnRet, EnvelopeRecipient
from mailprime.domain.templates import TemplateFields
from mailprime.storage.sql.schema import (
    blobs,
    campaign_sends,
    events,
    queue_messages,
    queue_recipients,
)

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

TABLES = (blobs, queue_messages, queue_recipients, events, campaign_sends)


async def test_bulk_rows_are_stored_as_sqlalchemy_stores_them(backend: Backend,
                                                              tmp_path: Path) -> None:
    if backend.name != "sqlite":
        return  # elsewhere the rows go through the SQLAlchemy statements themselves
    async with backend.open() as store:
        plain = Acceptance(queue_id=new_queue_id(), content=b"Subject: a\r\n\r\nplain\r\n",
                           sender="news@a.test", remote=(EnvelopeRecipient("r1@b.test"),),
                           source="campaign", client="campaign 1")
        dotted = Acceptance(queue_id=new_queue_id(),
                            content=b".x\r\nSubject: \xc3\xa9 \"q\"\r\n\r\n.\r\nend\r\n",
                            sender="Zoë \"the\" sender@a.test",
                            remote=(EnvelopeRecipient(
                                        "r2@b.test", frozenset({DsnNotify.SUCCESS, DsnNotify.DELAY}),
                                        "rfc822;r2@b.test"),
                                    EnvelopeRecipient("r3@c.test")),
                            dsn_ret=DsnRet.HDRS, dsn_envid="env 1", smtputf8=True,
                            require_tls=True, source="api", client="key ü")
        await store.accept_many([plain, dotted])
        await store.accept(Acceptance(queue_id=new_queue_id(), content=b"bare\nlf\n",
                                      sender="s@a.test", remote=(EnvelopeRecipient("r@d.test"),),
                                      tls_optional=True), lease_to="node:1", lease_seconds=30)
        template = await store.create_template(TemplateFields("t", "s", "<p>x</p>"))
        news = await store.create_list("news")
        campaign = await store.create_campaign(CampaignDraft(
            name="c", template_id=template.id, list_ids=(news.id,), from_address="n@a.test"))
        await store.upsert_contacts([ContactInput(f"c{n}@b.test") for n in range(3)],
                                    mode=ImportMode.UPSERT,
                                    evidence=ConsentEvidence(ConsentSource.CLI))
        contacts = await store.contacts_page()
        await store.record_sends(campaign.id, [
            SendRecord(campaign.id, contacts[0].id, contacts[0].email, SendStatus.PENDING,
                       new_queue_id()),
            SendRecord(campaign.id, contacts[1].id, contacts[1].email, SendStatus.SKIPPED,
                       reason="suppressed", detail="é " * 10)])
        await store.settle_sends(campaign.id, [(contacts[0].id, SendStatus.QUEUED, "", "")],
                                 cursor=contacts[1].id)

    ours = create_engine(backend.url, poolclass=NullPool)
    twin_url = f"sqlite:///{tmp_path / 'twin.db'}"
    async with backend.open(twin_url):  # the schema
        pass
    twin = create_engine(twin_url, poolclass=NullPool)  # foreign keys off: rows as they come
    try:
        for table in TABLES:
            with ours.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(select(table))]
            assert rows, table.name
            with twin.begin() as conn:
                conn.execute(insert(table), rows)
            quoted = ", ".join(f"quote({c.name})" for c in table.columns)
            order = ", ".join(c.name for c in table.primary_key.columns)
            sql = text(f"SELECT {quoted} FROM {table.name} ORDER BY {order}")
            with ours.connect() as a, twin.connect() as b:
                assert a.execute(sql).all() == b.execute(sql).all(), table.name
    finally:
        ours.dispose()
        twin.dispose()
