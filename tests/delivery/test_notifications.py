"""Which DSNs an attempt calls for (RFC 3461 5.2), tested as pure decisions, and the notifier
against a real SQLite store: DSNs land in the sender's mailbox, a delay warning goes out once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailprime.delivery.notifications import (
    DEFAULT_DELAY_WARNING,
    Notice,
    NoticePlan,
    Notifier,
    build_notice,
    delay_due,
    enhanced_status,
    mta_name,
    needs_history,
    plan_notices,
    warned_addresses,
)
from mailprime.domain.ids import BlobId, EventId, QueueId, RecipientId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    DsnNotify,
    DsnRet,
    EnvelopeRecipient,
    Event,
    EventKind,
    Priority,
    QueuedMessage,
    QueueRecipient,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.message.dsn import DsnAction
from mailprime.services.inject import Injector
from mailprime.storage.sql import SqlStore, open_store
from tests.support.instance import Dsn, dsn_field, parse_dsn

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = 3600.0
N = DsnNotify
ORIGINAL = (b"From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: Quarterly figures\r\n\r\n"
            b"The body, which only a failure report returns with RET=FULL.\r\n")


def message(sender: str = "alice@a.test", *, ret: DsnRet | None = None,
            envid: str | None = None) -> QueuedMessage:
    return QueuedMessage(QueueId("Q1"), sender, BlobId(1), len(ORIGINAL), Priority.NORMAL,
                         created_at=T0, expires_at=T0 + timedelta(days=5), dsn_ret=ret,
                         dsn_envid=envid)


def rcpt(n: int, notify: frozenset[DsnNotify] = frozenset(), *, attempts: int = 0,
         orcpt: str | None = None) -> QueueRecipient:
    return QueueRecipient(RecipientId(n), QueueId("Q1"), f"r{n}@b.test", "b.test",
                          RecipientStatus.PENDING, attempts, T0, notify=notify, orcpt=orcpt)


def job(*recipients: QueueRecipient, msg: QueuedMessage | None = None) -> DeliveryJob:
    return DeliveryJob(msg or message(), "b.test", tuple(recipients))


def outcome(r: QueueRecipient, status: RecipientStatus, reply: str = "",
            *, remote_dsn: bool = False, remote: str = "mx.b.test[192.0.2.1]:25") -> RecipientOutcome:
    default = {RecipientStatus.DELIVERED: "250 2.0.0 Ok: queued as X1",
               RecipientStatus.BOUNCED: "550 5.1.1 no such user",
               RecipientStatus.EXPIRED: "451 4.4.1 connect to mx.b.test[192.0.2.1]:25: refused",
               RecipientStatus.PENDING: "451 4.7.1 try later"}[status]
    return RecipientOutcome(r.id, status, reply or default, remote_host=remote,
                            next_attempt_at=T0 + timedelta(minutes=5), remote_dsn=remote_dsn)


def addresses(notices: tuple[Notice, ...]) -> list[str]:
    return [n.recipient.address for n in notices]


def plan(j: DeliveryJob, outcomes: list[RecipientOutcome], *, after: float = 60.0,
         delay_warning: float = DEFAULT_DELAY_WARNING, warned: frozenset[str] = frozenset()) -> NoticePlan:
    return plan_notices(j, outcomes, now=T0 + timedelta(seconds=after),
                        delay_warning=delay_warning, warned=warned)


# Failure (RFC 3461 5.2.6) ------------------------------------------------------------------------

def test_failures_are_reported_unless_notify_leaves_failure_out() -> None:
    rs = [rcpt(1), rcpt(2, frozenset({N.FAILURE})), rcpt(3, frozenset({N.NEVER})),
          rcpt(4, frozenset({N.SUCCESS})), rcpt(5, frozenset({N.DELAY, N.FAILURE}))]
    got = plan(job(*rs), [outcome(rs[0], RecipientStatus.BOUNCED),
                          outcome(rs[1], RecipientStatus.EXPIRED),
                          outcome(rs[2], RecipientStatus.BOUNCED),
                          outcome(rs[3], RecipientStatus.BOUNCED),
                          outcome(rs[4], RecipientStatus.BOUNCED)])
    assert addresses(got.failed) == ["r1@b.test", "r2@b.test", "r5@b.test"]
    assert got.relayed == got.delayed == ()
    assert [a for a, _ in got.groups()] == [DsnAction.FAILED]


def test_nothing_is_ever_reported_about_a_bounce() -> None:
    r = rcpt(1, frozenset({N.SUCCESS, N.FAILURE, N.DELAY}), attempts=3)
    for status in RecipientStatus:
        got = plan(job(r, msg=message("")), [outcome(r, status)], delay_warning=0)
        assert not got and got.groups() == []


# Success: relayed (5.2.2), nothing when the next hop took the NOTIFY (5.2.1) -------------------

def test_success_to_a_next_hop_without_dsn_is_relayed() -> None:
    rs = [rcpt(1, frozenset({N.SUCCESS})), rcpt(2, frozenset({N.SUCCESS, N.FAILURE})),
          rcpt(3), rcpt(4, frozenset({N.FAILURE})), rcpt(5, frozenset({N.NEVER}))]
    got = plan(job(*rs), [outcome(r, RecipientStatus.DELIVERED) for r in rs])
    assert addresses(got.relayed) == ["r1@b.test", "r2@b.test"]
    assert got.failed == got.delayed == ()


def test_success_to_a_next_hop_with_dsn_is_left_to_it() -> None:
    r = rcpt(1, frozenset({N.SUCCESS}))
    assert not plan(job(r), [outcome(r, RecipientStatus.DELIVERED, remote_dsn=True)])


# Delay (5.2.5), Postfix's delay_warning_time ---------------------------------------------------

def test_explicit_delay_with_warning_off_is_sent_at_the_first_deferral() -> None:
    rs = [rcpt(1, frozenset({N.DELAY})), rcpt(2), rcpt(3, frozenset({N.FAILURE})),
          rcpt(4, frozenset({N.NEVER}))]
    got = plan(job(*rs), [outcome(r, RecipientStatus.PENDING) for r in rs], delay_warning=0)
    assert addresses(got.delayed) == ["r1@b.test"]  # no NOTIFY: no warning while it is 0


def test_with_a_warning_time_both_explicit_and_default_wait_for_it() -> None:
    rs = [rcpt(1, frozenset({N.DELAY})), rcpt(2), rcpt(3, frozenset({N.FAILURE})),
          rcpt(4, frozenset({N.SUCCESS, N.DELAY}))]
    outs = [outcome(r, RecipientStatus.PENDING) for r in rs]
    assert not plan(job(*rs), outs, after=4 * HOUR - 1)
    got = plan(job(*rs), outs, after=4 * HOUR)
    assert addresses(got.delayed) == ["r1@b.test", "r2@b.test", "r4@b.test"]


def test_a_warned_recipient_is_not_warned_again() -> None:
    rs = [rcpt(1, frozenset({N.DELAY}), attempts=2), rcpt(2, frozenset({N.DELAY}), attempts=2)]
    outs = [outcome(r, RecipientStatus.PENDING) for r in rs]
    got = plan(job(*rs), outs, delay_warning=0, warned=frozenset({"r1@b.test"}))
    assert addresses(got.delayed) == ["r2@b.test"]


def test_delay_due_follows_the_notify_and_the_clock() -> None:
    def due(notify: frozenset[DsnNotify], after: float, warning: float) -> bool:
        return delay_due(rcpt(1, notify), arrival=T0, now=T0 + timedelta(seconds=after),
                         delay_warning=warning)

    assert due(frozenset({N.DELAY}), 1, 0) and not due(frozenset(), 1, 0)
    assert due(frozenset(), 10, 10) and not due(frozenset(), 9.5, 10)
    assert not due(frozenset({N.NEVER}), 10**6, 10)
    assert not due(frozenset({N.FAILURE, N.SUCCESS}), 10**6, 10)


def test_history_is_read_only_for_a_recipient_deferred_before() -> None:
    first, again = rcpt(1, frozenset({N.DELAY})), rcpt(2, frozenset({N.DELAY}), attempts=1)
    assert not needs_history(plan(job(first), [outcome(first, RecipientStatus.PENDING)],
                                  delay_warning=0))
    assert needs_history(plan(job(first, again), [outcome(first, RecipientStatus.PENDING),
                                                  outcome(again, RecipientStatus.PENDING)],
                              delay_warning=0))
    failed_again = rcpt(3, attempts=4)
    assert not needs_history(plan(job(failed_again),
                                  [outcome(failed_again, RecipientStatus.BOUNCED)]))


def test_warned_addresses_come_from_delayed_dsn_events_only() -> None:
    def event(n: int, kind: EventKind, who: str | None, action: str) -> Event:
        return Event(EventId(n), T0, kind, QueueId("Q1"), who, "", (("action", action),))

    events = [event(1, EventKind.DEFERRED, "a@b.test", "delayed"),
              event(2, EventKind.DSN_SENT, "b@b.test", "delayed"),
              event(3, EventKind.DSN_SENT, "c@b.test", "relayed"),
              event(4, EventKind.DSN_SENT, None, "delayed")]
    assert warned_addresses(events) == {"b@b.test"}


# One attempt with every kind -------------------------------------------------------------------

def test_one_attempt_can_call_for_three_reports_one_per_action() -> None:
    rs = [rcpt(1, frozenset({N.SUCCESS})), rcpt(2), rcpt(3, frozenset({N.DELAY})),
          rcpt(4, frozenset({N.SUCCESS})), rcpt(5, frozenset({N.DELAY}))]
    got = plan(job(*rs), [outcome(rs[0], RecipientStatus.DELIVERED),
                          outcome(rs[1], RecipientStatus.BOUNCED),
                          outcome(rs[2], RecipientStatus.PENDING),
                          outcome(rs[3], RecipientStatus.DELIVERED),
                          outcome(rs[4], RecipientStatus.EXPIRED)], delay_warning=0)
    assert [(a, addresses(n)) for a, n in got.groups()] == [
        (DsnAction.FAILED, ["r2@b.test"]),
        (DsnAction.RELAYED, ["r1@b.test", "r4@b.test"]),
        (DsnAction.DELAYED, ["r3@b.test"]),
    ]


_notify = st.frozensets(st.sampled_from(list(DsnNotify)))
_status = st.sampled_from(list(RecipientStatus))


@given(st.lists(st.tuples(_notify, _status, st.booleans(), st.integers(0, 5), st.booleans()),
                min_size=1, max_size=8),
       st.floats(0, 10 * HOUR), st.sampled_from([0.0, 60.0, DEFAULT_DELAY_WARNING]),
       st.booleans())
def test_plan_properties(rows: list[tuple[frozenset[DsnNotify], RecipientStatus, bool, int, bool]],
                         after: float, warning: float, null_sender: bool) -> None:
    rs = [rcpt(i, notify, attempts=attempts) for i, (notify, _s, _d, attempts, _w) in enumerate(rows)]
    outs = [outcome(r, status, remote_dsn=dsn) for r, (_n, status, dsn, _a, _w) in zip(rs, rows, strict=True)]
    warned = frozenset(r.address for r, row in zip(rs, rows, strict=True) if row[4])
    got = plan(job(*rs, msg=message("" if null_sender else "alice@a.test")), outs, after=after,
               delay_warning=warning, warned=warned)
    if null_sender:
        assert not got
    reported = [*addresses(got.failed), *addresses(got.relayed), *addresses(got.delayed)]
    assert len(reported) == len(set(reported))  # at most one report per recipient and attempt
    by_address = {r.address: (r, o) for r, o in zip(rs, outs, strict=True)}
    for address in reported:
        r, _o = by_address[address]
        assert N.NEVER not in r.notify
    for n in got.failed:
        assert n.outcome.status in (RecipientStatus.BOUNCED, RecipientStatus.EXPIRED)
    for n in got.relayed:
        assert n.outcome.status is RecipientStatus.DELIVERED and not n.outcome.remote_dsn
        assert N.SUCCESS in n.recipient.notify
    for n in got.delayed:
        assert n.outcome.status is RecipientStatus.PENDING
        assert n.recipient.address not in warned
        assert N.DELAY in n.recipient.notify or (not n.recipient.notify and warning > 0)


# The report itself ------------------------------------------------------------------------------

def test_status_takes_the_class_the_action_needs() -> None:
    assert enhanced_status("550 5.1.1 no such user", DsnAction.FAILED) == "5.1.1"
    assert enhanced_status("451 4.4.1 connect failed", DsnAction.FAILED) == "5.4.1"
    assert enhanced_status("451 4.4.1 connect failed", DsnAction.DELAYED) == "4.4.1"
    assert enhanced_status("421 try later", DsnAction.DELAYED) == "4.0.0"
    assert enhanced_status("451 4.x.1 odd", DsnAction.DELAYED) == "4.0.0"
    assert enhanced_status("", DsnAction.FAILED) == "5.0.0"
    assert enhanced_status("250 2.6.0 queued", DsnAction.RELAYED) == "2.0.0"
    assert mta_name("mx.b.test[192.0.2.1]:25") == "mx.b.test"
    assert mta_name("") is None


def test_delayed_report_names_the_expiry_and_honours_envid_and_ret() -> None:
    r = rcpt(1, frozenset({N.DELAY}), orcpt="rfc822;r1+2Bx@b.test")
    j = job(r, msg=message(ret=DsnRet.FULL, envid="campaign-42"))
    now = T0 + timedelta(minutes=1)
    dsn = parse_dsn(build_notice(j, DsnAction.DELAYED, [Notice(r, outcome(r, RecipientStatus.PENDING))],
                                 original=ORIGINAL, hostname="mail.a.test", now=now))
    assert dsn.message["Subject"] == "Delayed Mail (still being retried)"
    assert dsn_field(dsn.per_message, "Original-Envelope-Id") == "campaign-42"
    assert dsn_field(dsn.per_message, "Reporting-MTA") == "dns; mail.a.test"
    (block,) = dsn.per_recipient
    assert dsn_field(block, "Action") == "delayed"
    assert dsn_field(block, "Status") == "4.7.1"
    assert dsn_field(block, "Original-Recipient") == "rfc822; r1+x@b.test"
    assert dsn_field(block, "Remote-MTA") == "dns; mx.b.test"
    assert dsn_field(block, "Will-Retry-Until") == "Mon, 07 Jan 2030 03:04:05 +0000"
    # RET=FULL returns the whole message only in a failure report (RFC 3461 4.3).
    assert dsn.parts[2].get_content_type() == "text/rfc822-headers"
    assert "Quarterly figures" in dsn.parts[2].get_content()


def test_relayed_and_failed_reports_honour_ret_and_envid() -> None:
    r = rcpt(1, frozenset({N.SUCCESS, N.FAILURE}))
    j = job(r, msg=message(ret=DsnRet.FULL, envid="e-1"))
    relayed = parse_dsn(build_notice(j, DsnAction.RELAYED,
                                     [Notice(r, outcome(r, RecipientStatus.DELIVERED))],
                                     original=ORIGINAL, hostname="mail.a.test", now=T0))
    (block,) = relayed.per_recipient
    assert (dsn_field(block, "Action"), dsn_field(block, "Status")) == ("relayed", "2.0.0")
    assert dsn_field(block, "Will-Retry-Until") == ""
    assert dsn_field(relayed.per_message, "Original-Envelope-Id") == "e-1"
    assert relayed.parts[2].get_content_type() == "text/rfc822-headers"
    assert relayed.message["Subject"] == "Successful Mail Delivery Report"

    failed = parse_dsn(build_notice(j, DsnAction.FAILED,
                                    [Notice(r, outcome(r, RecipientStatus.BOUNCED))],
                                    original=ORIGINAL, hostname="mail.a.test", now=T0))
    assert dsn_field(failed.per_message, "Original-Envelope-Id") == "e-1"
    assert failed.parts[2].get_content_type() == "message/rfc822"  # RET=FULL on a failure
    hdrs = parse_dsn(build_notice(job(r, msg=message(ret=DsnRet.HDRS)), DsnAction.FAILED,
                                  [Notice(r, outcome(r, RecipientStatus.BOUNCED))],
                                  original=ORIGINAL, hostname="mail.a.test", now=T0))
    assert hdrs.parts[2].get_content_type() == "text/rfc822-headers"
    assert dsn_field(hdrs.per_message, "Original-Envelope-Id") == ""


# The notifier on a real store ------------------------------------------------------------------

class StepClock:
    def __init__(self) -> None:
        self.current = T0

    def now(self) -> datetime:
        return self.current


async def open_test_store(tmp_path: Path, clock: StepClock) -> SqlStore:
    store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                             inline_max=64 * 1024, clock=clock)
    await store.add_domain("a.test")
    await store.add_account("alice@a.test", "x")
    return store


async def inbox(store: SqlStore, address: str) -> list[Dsn]:
    account = await store.get_account(address)
    assert account is not None
    messages = sorted(await store.list_messages(account.id, "INBOX"), key=lambda m: m.uid)
    return [parse_dsn(await store.read_blob(m.blob_id)) for m in messages]


def test_notifier_sends_each_kind_once_into_the_senders_mailbox(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = StepClock()
        store = await open_test_store(tmp_path, clock)
        try:
            queue_id = new_queue_id()
            await store.accept(Acceptance(
                queue_id=queue_id, content=ORIGINAL, sender="alice@a.test",
                remote=(EnvelopeRecipient("slow@b.test", frozenset({N.DELAY})),
                        EnvelopeRecipient("quiet@b.test"),
                        EnvelopeRecipient("fast@b.test", frozenset({N.SUCCESS}))),
                dsn_envid="env-7"))
            notifier = Notifier(store, Injector(store), hostname="mail.a.test", delay_warning=0)
            sent: list[NoticePlan] = []
            for attempt in range(3):  # three attempts: the warning must go out on the first only
                (claimed,) = await store.claim_due(clock.now(), 10, "test:1", 60)
                outs = [outcome(r, RecipientStatus.DELIVERED if r.address.startswith("fast")
                                else RecipientStatus.PENDING, remote="") for r in claimed.recipients]
                await store.record_outcomes(claimed, outs, clock.now())
                sent.append(await notifier.after_attempt(claimed, outs, clock.now()))
                clock.current += timedelta(minutes=10 * (attempt + 1))
            assert [(a, addresses(n)) for p in sent for a, n in p.groups()] == [
                (DsnAction.RELAYED, ["fast@b.test"]), (DsnAction.DELAYED, ["slow@b.test"])]

            reports = await inbox(store, "alice@a.test")
            assert [dsn_field(r.per_recipient[0], "Action") for r in reports] == ["relayed", "delayed"]
            for report in reports:
                assert dsn_field(report.per_message, "Original-Envelope-Id") == "env-7"
                assert len(report.per_recipient) == 1
            # Our own reason (no remote host): an "x-" diagnostic type, no Remote-MTA.
            assert dsn_field(reports[1].per_recipient[0], "Diagnostic-Code").startswith(
                "x-mailprime; 451 4.7.1")
            events = [e for e in await store.list_events(queue_id) if e.kind is EventKind.DSN_SENT]
            assert [(e.recipient, dict(e.attrs)["action"]) for e in events] == [
                ("fast@b.test", "relayed"), ("slow@b.test", "delayed")]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_failure_returns_the_whole_original_only_when_small_enough(tmp_path: Path) -> None:
    """RET=FULL: a small message comes back whole; one larger than build_dsn's limit (and kept
    in a spool file by the store) comes back as headers, read without loading the body."""
    big = ORIGINAL + (b"y" * 998 + b"\r\n") * 1100  # 1.1 MB: above DEFAULT_MAX_FULL_SIZE

    async def scenario() -> None:
        clock = StepClock()
        store = await open_test_store(tmp_path, clock)
        try:
            for content in (ORIGINAL, big):
                await store.accept(Acceptance(
                    queue_id=new_queue_id(), content=content, sender="alice@a.test",
                    remote=(EnvelopeRecipient("gone@b.test"),), dsn_ret=DsnRet.FULL))
            notifier = Notifier(store, Injector(store), hostname="mail.a.test")
            jobs = sorted(await store.claim_due(clock.now(), 10, "test:1", 60),
                          key=lambda j: j.message.size)
            for claimed in jobs:
                outs = [outcome(r, RecipientStatus.BOUNCED) for r in claimed.recipients]
                await store.record_outcomes(claimed, outs, clock.now())
                await notifier.after_attempt(claimed, outs, clock.now())
            small_report, big_report = await inbox(store, "alice@a.test")
            assert small_report.parts[2].get_content_type() == "message/rfc822"
            assert b"only a failure report returns" in small_report.parts[2].as_bytes()
            assert big_report.parts[2].get_content_type() == "text/rfc822-headers"
            assert "Subject: Quarterly figures" in big_report.parts[2].get_content()
            assert dsn_field(big_report.per_recipient[0], "Status") == "5.1.1"
        finally:
            await store.close()

    asyncio.run(scenario())
