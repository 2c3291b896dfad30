"""The send gate and CSV import/export, on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

from mailprime.domain.audience import (
    ConsentAction,
    ConsentEvidence,
    ConsentSource,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import ListId
from mailprime.marketing import consent
from mailprime.marketing.csv_io import export_contacts, import_contacts
from mailprime.marketing.gate import Purpose, Refusal, SendGate
from mailprime.storage.sql import SqlStore
from tests.storage.conftest import Backend, backend, pg_databases, pg_session_url  # noqa: F401

FORM = ConsentEvidence(ConsentSource.FORM, "v1", "192.0.2.1")


def run(backend: Backend, action: Callable[[SqlStore], Awaitable[None]]) -> None:  # noqa: F811
    async def main() -> None:
        async with backend.open() as store:
            await action(store)

    asyncio.run(main())


def test_gate_refuses_suppressed_unsubscribed_unconfirmed_and_strangers(
        backend: Backend) -> None:  # noqa: F811
    async def act(store: SqlStore) -> None:
        double = await store.create_list("double", opt_in=OptIn.DOUBLE)
        single = await store.create_list("single", opt_in=OptIn.SINGLE)
        await consent.subscribe(store, "new@example.com", "double", FORM)
        await consent.subscribe(store, "ok@example.com", "double", FORM)
        await consent.confirm(store, "ok@example.com", "double", FORM)
        await consent.subscribe(store, "ok@example.com", "single", FORM)
        await consent.subscribe(store, "gone@example.com", "single", FORM)
        await consent.unsubscribe(store, "gone@example.com", "single",
                                  ConsentEvidence(ConsentSource.ONE_CLICK))
        await store.suppress(Suppression("ok@example.com", "b.test", SuppressionReason.HARD_BOUNCE,
                                         datetime(2030, 1, 1, tzinfo=UTC)))
        gate = SendGate(store)

        async def refusal(address: str, domain: str = "a.test", list_id: ListId | None = None,
                          purpose: Purpose = Purpose.MARKETING) -> Refusal | None:
            decision = await gate.check(address, sending_domain=domain, list_id=list_id,
                                        purpose=purpose)
            assert decision.allowed == (decision.refusal is None) and decision.reason
            return decision.refusal

        assert await refusal("ok@example.com", list_id=double.id) is None
        assert await refusal("ok@example.com", list_id=single.id) is None
        assert await refusal("OK@example.com", "b.test", single.id) is Refusal.SUPPRESSED
        assert await refusal("ok@example.com", "b.test",
                             purpose=Purpose.TRANSACTIONAL) is Refusal.SUPPRESSED
        assert await refusal("new@example.com", list_id=double.id) is Refusal.UNCONFIRMED
        assert await refusal("gone@example.com", list_id=single.id) is Refusal.UNSUBSCRIBED
        assert await refusal("new@example.com", list_id=single.id) is Refusal.NOT_A_MEMBER
        assert await refusal("stranger@example.com", list_id=single.id) is Refusal.NOT_A_MEMBER
        assert await refusal("stranger@example.com") is None  # no list: suppressions only
        assert await refusal("a@b@c", list_id=single.id) is Refusal.INVALID_ADDRESS
        assert await refusal("ok@example.com", list_id=ListId(999)) is Refusal.NO_SUCH_LIST
        # Erased: refused everywhere, by the hashed suppression alone.
        await store.erase_contact("ok@example.com")
        assert await refusal("ok@example.com", "c.test",
                             purpose=Purpose.TRANSACTIONAL) is Refusal.SUPPRESSED
        ledger = await store.consent_entries("gone@example.com")
        assert [e.action for e in ledger] == [ConsentAction.GIVEN, ConsentAction.CONFIRMED,
                                              ConsentAction.WITHDRAWN]

    run(backend, act)


def test_check_many_decides_as_check_does_for_every_refusal(
        backend: Backend) -> None:  # noqa: F811
    async def act(store: SqlStore) -> None:
        double = await store.create_list("double", opt_in=OptIn.DOUBLE)
        single = await store.create_list("single", opt_in=OptIn.SINGLE)
        await consent.subscribe(store, "new@example.com", "double", FORM)
        await consent.subscribe(store, "ok@example.com", "double", FORM)
        await consent.confirm(store, "ok@example.com", "double", FORM)
        await consent.subscribe(store, "ok@example.com", "single", FORM)
        await consent.subscribe(store, "gone@example.com", "single", FORM)
        await consent.unsubscribe(store, "gone@example.com", "single",
                                  ConsentEvidence(ConsentSource.ONE_CLICK))
        await consent.subscribe(store, "erased@example.com", "single", FORM)
        await store.erase_contact("erased@example.com")
        await store.suppress(Suppression("ok@example.com", "b.test", SuppressionReason.HARD_BOUNCE,
                                         datetime(2030, 1, 1, tzinfo=UTC)))
        gate = SendGate(store)
        addresses = ["ok@example.com", "OK@example.com", "new@example.com", "gone@example.com",
                     "stranger@example.com", "erased@example.com", "a@b@c", "not-an-address"]
        lists: list[ListId | None] = [None, double.id, single.id, ListId(999)]
        seen: set[Refusal | None] = set()
        for domain in ("a.test", "b.test"):
            for purpose in Purpose:
                for list_id in lists:
                    one = [await gate.check(a, sending_domain=domain, list_id=list_id,
                                            purpose=purpose) for a in addresses]
                    many = await gate.check_many(
                        addresses, sending_domain=domain, purpose=purpose,
                        list_ids=[list_id] if list_id is not None else [])
                    assert many == one, (domain, purpose, list_id)
                    seen.update(d.refusal for d in one)
        assert seen == {None, *Refusal}  # every refusal kind was compared

        # Several lists: allowed when one allows it, else the first list's refusal.
        both = [double.id, single.id]
        decisions = await gate.check_many(["new@example.com", "gone@example.com",
                                           "ok@example.com", "ok@example.com"],
                                          sending_domain="a.test", list_ids=both)
        assert [d.refusal for d in decisions] == [Refusal.UNCONFIRMED, Refusal.NOT_A_MEMBER,
                                                  None, None]
        refused = await gate.check_many(["ok@example.com"], sending_domain="b.test",
                                        list_ids=[ListId(999), *both])
        assert refused[0].refusal is Refusal.SUPPRESSED  # for every list alike
        assert (await gate.check_many(["new@example.com"], sending_domain="a.test",
                                      list_ids=[ListId(999), *both]))[0].refusal \
            is Refusal.NO_SUCH_LIST
        assert await gate.check_many([], sending_domain="a.test", list_ids=both) == []

    run(backend, act)


CSV_IN = """email,name,attributes,attributes.plan,attributes.age
ann@example.com,Ann,"{""city"": ""Oslo""}",pro,31
not-an-address,X,,,
ben@example.com,Ben,,free,
ANN@example.com,Dup,,,
carol@example.com,Carol,{broken,,
,,,,

dave@Example.COM,Dave,"[1]",,
erin@example.com,Erin,,"quoted, text",true
"""


def test_import_validates_deduplicates_reports_and_exports(backend: Backend) -> None:  # noqa: F811
    async def act(store: SqlStore) -> None:
        news = await store.create_list("news", opt_in=OptIn.SINGLE)
        rejects = io.StringIO()
        report = await import_contacts(store, io.StringIO(CSV_IN), rejects=rejects,
                                       list_id=news.id, batch_size=2)
        # Row 5 repeats Ann in the next batch (batch_size=2): it updates her, as any existing
        # contact would be; the blank rows 7 and 8 are not counted.
        assert (report.rows, report.created, report.updated, report.rejected) == (7, 3, 1, 3)
        rejected = list(csv.reader(io.StringIO(rejects.getvalue())))
        assert rejected[0] == ["row", "reason", "email"]
        by_row = {r[0]: (r[1], r[2]) for r in rejected[1:]}
        assert set(by_row) == {"3", "6", "9"}
        assert by_row["3"][1] == "not-an-address" and "@" in by_row["3"][0]
        assert "not JSON" in by_row["6"][0] and "not a JSON object" in by_row["9"][0]
        # Within one batch, the first row wins and the repeat is reported.
        dups = io.StringIO()
        dup = await import_contacts(store, io.StringIO("email\nx@example.net\nX@Example.net\n"),
                                    rejects=dups)
        assert (dup.created, dup.rejected) == (1, 1)
        assert list(csv.reader(io.StringIO(dups.getvalue())))[1] == [
            "3", "duplicate of row 2", "X@Example.net"]
        ann = await store.get_contact("ann@example.com")
        assert ann is not None and ann.attributes == {"city": "Oslo", "plan": "pro", "age": 31}
        erin = await store.get_contact("erin@example.com")
        assert erin is not None and erin.attributes == {"plan": "quoted, text", "age": True}
        members = await store.list_members(news.id)
        assert {m.status for _, m in members} == {MembershipStatus.UNCONFIRMED}
        assert {e.source for e in await store.consent_entries("ann@example.com")} == {
            ConsentSource.IMPORT}
        # skip-existing leaves Ann alone; --confirmed confirms the new ones.
        again = await import_contacts(
            store, io.StringIO("email,name\nann@example.com,Changed\nfred@example.com,Fred\n"),
            mode=ImportMode.SKIP_EXISTING, list_id=news.id, confirmed=True)
        assert (again.created, again.skipped) == (1, 1)
        fred = await store.get_contact("fred@example.com")
        assert fred is not None
        member = await store.get_membership(fred.id, news.id)
        assert member is not None and member.status is MembershipStatus.CONFIRMED
        # Export round-trips through import.
        out = io.StringIO()
        assert await export_contacts(store, out) == 5
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert [r["email"] for r in rows] == ["ann@example.com", "ben@example.com",
                                              "erin@example.com", "x@example.net",
                                              "fred@example.com"]
        assert rows[0]["name"] == "Dup" and '"plan": "pro"' in rows[0]["attributes"]
        listed = io.StringIO()
        assert await export_contacts(store, listed, list_id=news.id) == 4
        assert list(csv.DictReader(io.StringIO(listed.getvalue())))[-1]["status"] == "confirmed"

    run(backend, act)


def _big_csv(rows: int) -> Iterator[str]:
    yield "email,name,attributes.n\n"
    for i in range(rows):
        yield f"user{i}@example.com,User {i},{i}\n"


class _Lines(io.TextIOBase):
    """A file-like object producing the CSV on the fly: the test holds no copy of it."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines

    def readable(self) -> bool:
        return True

    def __next__(self) -> str:
        return next(self._lines)

    def __iter__(self) -> _Lines:
        return self


def test_import_streams_in_bounded_memory(backend: Backend) -> None:  # noqa: F811
    if backend.name != "sqlite":
        return  # one backend is enough for a memory bound
    rows = 4_000
    seen: list[int] = []

    async def act(store: SqlStore) -> None:
        tracemalloc.start()
        try:
            report = await import_contacts(store, _Lines(_big_csv(rows)), progress=seen.append,
                                           batch_size=250)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.created == rows and report.rejected == 0
        assert await store.count_contacts() == rows
        # Sixteen batches of 250 rows went through; the peak is what one batch takes (0.7 MB
        # measured), not what the file takes (one batch of all 4,000 rows peaks at 7.9 MB).
        assert peak < 3_000_000, peak
        assert seen[-1] == rows and seen == sorted(seen)

    run(backend, act)
