"""The suppression policy on a real SQLite store: which failures and complaints suppress, the
soft-bounce window, scopes, the events with their evidence, and the submission gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from mailprime.domain.deliverability import SuppressionReason
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.message.bounce_reason import BounceReason
from mailprime.services.suppression import COUNTABLE, Failure, SuppressionConfig, SuppressionPolicy
from mailprime.storage.sql import SqlStore, open_store
from tests.storage.conftest import FixedClock

QID = QueueId("0ZC1F4XKSNT6B7D8G9")
HARD = Failure(queue_id=QID, address="Bob@B.test", sender="alice@a.test",
               reason=BounceReason.USER_UNKNOWN, hard=True, status="5.1.1", source="sync",
               evidence="550 5.1.1 <bob@b.test>: user unknown")
FULL = replace(HARD, reason=BounceReason.MAILBOX_FULL, hard=False, status="4.2.2",
               evidence="452 4.2.2 mailbox full")


@asynccontextmanager
async def policy(tmp: Path, **config: object) -> AsyncIterator[tuple[SuppressionPolicy, SqlStore,
                                                                    FixedClock]]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    try:
        yield SuppressionPolicy(store, clock, SuppressionConfig(**config)), store, clock  # type: ignore[arg-type]
    finally:
        await store.close()


def run(tmp: Path, body: Callable[[SuppressionPolicy, SqlStore, FixedClock], Awaitable[None]],
        **config: object) -> None:
    async def main() -> None:
        async with policy(tmp, **config) as (p, store, clock):
            await body(p, store, clock)

    asyncio.run(main())


def test_hard_user_unknown_suppresses_with_one_event(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        made = await p.failure(HARD)
        assert made is not None
        assert (made.address, made.scope, made.reason, made.queue_id) == (
            "bob@b.test", "", SuppressionReason.HARD_BOUNCE, QID)
        assert made.detail == HARD.evidence
        assert await p.failure(HARD) is None  # already suppressed: no second entry or event
        events = [e for e in await store.list_events(QID) if e.kind is EventKind.SUPPRESSED]
        assert len(events) == 1
        assert events[0].recipient == "bob@b.test" and events[0].detail == HARD.evidence
        assert dict(events[0].attrs) == {"reason": "hard_bounce", "scope": "global",
                                         "bounce_reason": "user_unknown", "class": "hard",
                                         "status": "5.1.1", "source": "sync"}

    run(tmp_path, body)


def test_policy_and_auth_blocks_do_not_suppress_the_address(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        for reason in (BounceReason.POLICY, BounceReason.AUTH_FAILURE, BounceReason.OTHER,
                       BounceReason.MESSAGE_TOO_LARGE):
            assert await p.failure(replace(HARD, reason=reason, status="5.7.1")) is None
        assert await store.find_suppression("bob@b.test") is None

    run(tmp_path, body)


def test_hard_reasons_are_configurable(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, _store: SqlStore, _clock: FixedClock) -> None:
        assert await p.failure(HARD) is None
        assert await p.failure(replace(HARD, reason=BounceReason.POLICY)) is not None

    run(tmp_path, body, hard_reasons=frozenset({"policy"}))


def test_soft_bounces_suppress_at_the_limit_within_the_window(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, clock: FixedClock) -> None:
        day = 86400
        assert await p.failure(FULL) is None  # 1
        clock.advance(2 * day)
        assert await p.failure(FULL) is None  # 2 within 7 days
        clock.advance(8 * day)  # both earlier ones are now out of the window
        assert await p.failure(FULL) is None  # 1
        clock.advance(day)
        assert await p.failure(FULL) is None  # 2
        clock.advance(day)
        made = await p.failure(FULL)  # 3 within 7 days
        assert made is not None and made.reason is SuppressionReason.SOFT_BOUNCES
        assert made.detail == "452 4.2.2 mailbox full"
        (event,) = [e for e in await store.list_events(QID) if e.kind is EventKind.SUPPRESSED]
        assert dict(event.attrs)["reason"] == "soft_bounces"
        assert dict(event.attrs)["class"] == "soft"

    run(tmp_path, body, soft_bounce_limit=3, soft_bounce_days=7)


def test_uncounted_soft_failures_and_a_zero_limit_never_suppress(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        for _ in range(3):
            assert await p.failure(replace(FULL, count_soft=False)) is None
        assert await p.failure(FULL) is None  # the first counted one
        assert await store.find_suppression("bob@b.test") is None

    run(tmp_path, body, soft_bounce_limit=2)

    async def off(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        for _ in range(5):
            assert await p.failure(FULL) is None
        assert await store.find_suppression("bob@b.test") is None

    run(tmp_path / "off", off, soft_bounce_limit=0)


def test_domain_scope_and_null_sender(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        made = await p.failure(replace(HARD, sender="news@Shop.A.test"))
        assert made is not None and made.scope == "shop.a.test"
        assert await store.find_suppression("bob@b.test", "shop.a.test") is not None
        assert await store.find_suppression("bob@b.test", "other.test") is None
        # A DSN's own failure (null sender) suppresses nothing.
        assert await p.failure(replace(HARD, address="carol@b.test", sender="")) is None

    run(tmp_path, body, scope="domain")


def test_complaints_suppress_record_or_not_spam(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        made = await p.complaint(queue_id=QID, address="Dave@b.test", sender="alice@a.test",
                                 feedback_type="abuse", evidence="abuse report by X")
        assert made is not None and made.reason is SuppressionReason.COMPLAINT
        assert await p.complaint(queue_id=QID, address="erin@b.test", sender="alice@a.test",
                                 feedback_type="not-spam", evidence="not spam") is None
        kinds = [(e.kind, e.recipient) for e in await store.list_events(QID)]
        assert (EventKind.COMPLAINED, "dave@b.test") in kinds
        assert (EventKind.COMPLAINED, "erin@b.test") in kinds
        assert (EventKind.SUPPRESSED, "dave@b.test") in kinds
        assert (EventKind.SUPPRESSED, "erin@b.test") not in kinds

    run(tmp_path, body)

    async def record_only(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        assert await p.complaint(queue_id=None, address="dave@b.test", sender="alice@a.test",
                                 feedback_type="abuse", evidence="e") is None
        assert await store.find_suppression("dave@b.test") is None
        assert [e.kind for e in await store.list_events()] == [EventKind.COMPLAINED]

    run(tmp_path / "record", record_only, complaints="record")


def test_gate_refuses_with_reason_and_date(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, _store: SqlStore, clock: FixedClock) -> None:
        assert await p.gate("alice@a.test", "bob@b.test") is None
        await p.failure(HARD)
        reply = await p.gate("alice@a.test", "BOB@b.test")
        assert reply is not None
        assert (reply.code, reply.enhanced) == (550, "5.7.1")
        assert reply.text == (f"<BOB@b.test>: recipient suppressed (hard bounce on "
                              f"{clock.now():%Y-%m-%d})")

    run(tmp_path, body)

    async def disabled(p: SuppressionPolicy, _store: SqlStore, _clock: FixedClock) -> None:
        await p.failure(HARD)
        assert await p.gate("alice@a.test", "bob@b.test") is None

    run(tmp_path / "off", disabled, submission_gate=False)


def test_domain_scope_never_suppresses_without_a_sending_domain(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        # A sender without a domain: under scope = "domain" its scope would be "", which is
        # the global scope: an entry there would stop mail from every domain.
        assert await p.failure(replace(HARD, sender="postmaster")) is None
        assert await p.complaint(queue_id=QID, address="dave@b.test", sender="",
                                 feedback_type="abuse", evidence="e") is None
        assert await store.list_suppressions() == []
        assert await p.failure(HARD) is not None  # with a domain: scoped to it
        assert [s.scope for s in await store.list_suppressions()] == ["a.test"]

    run(tmp_path, body, scope="domain")


def test_an_unmapped_complaint_is_recorded_and_suppresses_nothing(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        assert await p.complaint(queue_id=None, address=None, sender="", mapped=False,
                                 feedback_type="abuse", evidence="abuse report by X",
                                 extra=(("reported_recipient", "victim@b.test"),)) is None
        (event,) = await store.list_events()
        assert (event.kind, event.recipient) == (EventKind.COMPLAINED, None)
        assert dict(event.attrs) == {"feedback_type": "abuse", "source": "arf", "mapped": "no",
                                     "reported_recipient": "victim@b.test"}
        assert await store.list_suppressions() == []

    run(tmp_path, body)


def test_a_soft_failure_counts_once_per_message_by_its_events(tmp_path: Path) -> None:
    async def body(p: SuppressionPolicy, store: SqlStore, _clock: FixedClock) -> None:
        async def deferred(queue_id: QueueId) -> None:  # what the caller records first
            await store.append(EventKind.DEFERRED, queue_id, "bob@b.test", "452 4.2.2 full",
                               (("class", "soft"), COUNTABLE))

        await deferred(QID)
        assert await p.failure(FULL) is None  # the first of this message: counted (1)
        await store.append(EventKind.DEFERRED, QID, "bob@b.test", "451 4.7.0 throttled",
                           (("throttle", "yes"),))
        await deferred(QID)
        assert await p.failure(FULL) is None  # the same message again: not counted
        assert await store.find_suppression("bob@b.test") is None
        other = QueueId("0ZC1F4XKSNT6B7D8GB")
        await deferred(other)
        made = await p.failure(replace(FULL, queue_id=other))  # another message: 2 of 2
        assert made is not None and made.reason is SuppressionReason.SOFT_BOUNCES

    run(tmp_path, body, soft_bounce_limit=2)
