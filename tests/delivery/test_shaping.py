"""The shaper's pure logic on a hand-driven clock: GCRA pacing, deferral spreading, AIMD
back-off and recovery, which replies count as throttling, and provider grouping."""

from __future__ import annotations

import logging

import pytest

from mailprime.delivery.provider_groups import (
    BUILTIN_PROVIDERS,
    ProviderRule,
    ProviderTable,
    merge_rules,
    registered_domain,
    share_rule,
)
from mailprime.delivery.shaping import (
    AdaptivePolicy,
    GroupLimits,
    Shaper,
    Stage,
    is_throttle_reply,
)
from mailprime.proto.smtp.types import Reply


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def shaper(rate: float, *, ticks: Ticks, hold: float = 0.0, backoff_seconds: float = 60.0,
           backoff_max_seconds: float = 3600.0, recovery_percent: float = 10.0) -> Shaper:
    limits = GroupLimits(connections=2, messages_per_connection=10, messages_per_minute=rate)
    policy = AdaptivePolicy(hold_seconds=hold, backoff_seconds=backoff_seconds,
                            backoff_max_seconds=backoff_max_seconds,
                            recovery_percent=recovery_percent)
    return Shaper(lambda _group: limits, policy, monotonic=ticks)


def test_gcra_paces_at_the_rate_with_one_second_of_burst() -> None:
    ticks = Ticks()
    s = shaper(120.0, hold=10.0, ticks=ticks)  # 2 a second: burst 2, interval 0.5 s
    waits = [s.admit("g").wait for _ in range(5)]
    assert waits == [0.0, 0.0, 0.5, 1.0, 1.5]
    ticks.t += 10  # idle time does not bank more than the burst
    assert [s.admit("g").wait for _ in range(3)] == [0.0, 0.0, 0.5]


def test_beyond_the_hold_jobs_are_deferred_one_interval_apart() -> None:
    ticks = Ticks()
    s = shaper(6.0, hold=0.0, ticks=ticks)  # one every 10 s
    assert s.admit("g").wait == 0.0
    deferrals = [s.admit("g") for _ in range(3)]
    assert [d.reason for d in deferrals] == ["rate"] * 3
    assert [d.defer_until for d in deferrals] == [1010.0, 1020.0, 1030.0]
    ticks.t = 1010.0
    assert s.admit("g").wait == 0.0  # the slot it was deferred to is free
    assert s.snapshot("g").deferred == 3


def test_no_rate_means_no_pacing() -> None:
    s = shaper(0.0, ticks=Ticks())
    assert all(s.admit("g").wait == 0.0 for _ in range(1000))


def test_throttle_halves_what_was_sent_pauses_and_ignores_its_own_echoes() -> None:
    ticks = Ticks()
    s = shaper(600.0, ticks=ticks, backoff_seconds=60.0, backoff_max_seconds=3600.0)
    for _ in range(10):  # 10 in the last minute: far below the cap of 600
        assert s.admit("g").defer_until is None
    assert s.throttled("g", "421 4.7.0 slow down")
    snap = s.snapshot("g")
    assert (snap.state, snap.rate, snap.paused_for, snap.consecutive) == ("paused", 5.0, 60.0, 1)
    # Replies from connections already in flight belong to the same episode.
    assert not s.throttled("g", "421 4.7.0 slow down")
    paused = s.admit("g")
    assert (paused.reason, paused.defer_until) == ("paused", 1060.0)
    assert s.paused_until("g") == 1060.0
    ticks.t = 1060.0
    assert s.paused_until("g") is None
    assert s.admit("g").wait == 0.0  # open again, at 5 a minute
    assert s.admit("g").defer_until == pytest.approx(1072.0)


def test_repeated_throttles_double_the_pause_up_to_the_maximum() -> None:
    ticks = Ticks()
    s = shaper(600.0, ticks=ticks, backoff_seconds=60.0, backoff_max_seconds=200.0)
    pauses, rates = [], []
    for _ in range(4):  # nothing sent: each halves the current cap
        assert s.throttled("g", "421 4.7.0")
        pauses.append(s.snapshot("g").paused_for)
        rates.append(s.snapshot("g").rate)
        ticks.t += pauses[-1]
    assert pauses == [60.0, 120.0, 200.0, 200.0]
    assert rates == [300.0, 150.0, 75.0, 37.5]
    ticks.t += 201  # more than backoff_max of quiet: the next throttle starts a new episode
    s.throttled("g", "421 4.7.0")
    assert s.snapshot("g").consecutive == 1


def test_recovery_adds_a_step_per_quiet_minute_back_to_the_configured_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mailprime.delivery.shaping")
    ticks = Ticks()
    s = shaper(20.0, ticks=ticks, backoff_seconds=30.0, recovery_percent=25.0)
    for _ in range(8):  # GCRA keeps it under 20 a minute; 8 sent now is 8 in the window
        ticks.t += 3
        s.admit("g")
    s.throttled("g", "451 4.7.28 unusual rate")
    assert s.snapshot("g").rate == 4.0  # half of the 8 sent; step = 25 % of 8 = 2 per minute
    ticks.t += 30 + 59
    assert s.snapshot("g").rate == 4.0  # a whole quiet minute is needed
    ticks.t += 1
    assert (s.snapshot("g").state, s.snapshot("g").rate) == ("recovering", 6.0)
    ticks.t += 60 * 6
    snap = s.snapshot("g")
    assert (snap.state, snap.rate) == ("recovering", 18.0)
    ticks.t += 60
    snap = s.snapshot("g")
    assert (snap.state, snap.rate) == ("open", 20.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ('shaping: group=g, state=throttled, rate_per_min=4.0, pause_s=30.0, '
                        'consecutive=1, reply="451 4.7.28 unusual rate"')
    assert lines[1:3] == ["shaping: group=g, state=recovering, rate_per_min=6.0",
                          "shaping: group=g, state=recovering, rate_per_min=18.0"]
    assert lines[-1] == "shaping: group=g, state=recovered, rate_per_min=20.0"


def test_an_unlimited_group_gets_its_cap_lifted_when_back_at_its_old_pace() -> None:
    ticks = Ticks()
    s = shaper(0.0, ticks=ticks, backoff_seconds=10.0, recovery_percent=50.0)
    for _ in range(4):
        s.admit("g")
    s.throttled("g", "421 4.7.0")
    assert s.snapshot("g").rate == 2.0
    ticks.t += 10 + 60
    snap = s.snapshot("g")
    assert (snap.state, snap.rate) == ("open", 0.0)  # 2 + 2 reached the old 4 a minute


def test_a_throttle_with_nothing_sent_pauses_without_touching_an_unlimited_rate() -> None:
    ticks = Ticks()
    s = shaper(0.0, ticks=ticks, backoff_seconds=10.0)
    assert s.throttled("g", "421 4.7.0 too many connections")
    snap = s.snapshot("g")
    assert (snap.state, snap.rate, snap.paused_for) == ("paused", 0.0, 10.0)


def test_adaptation_off_ignores_replies() -> None:
    ticks = Ticks()
    limits = GroupLimits(2, 10, 60.0)
    s = Shaper(lambda _g: limits, AdaptivePolicy(enabled=False), monotonic=ticks)
    assert not s.throttled("g", "421 4.7.0")
    assert s.snapshot("g").state == "open"


CONNECT, MAIL, RCPT, DATA = Stage.CONNECT, Stage.MAIL, Stage.RCPT, Stage.DATA


@pytest.mark.parametrize(("reply", "stage", "throttle"), [
    # 421 closes the channel (RFC 5321 3.8): about us, whatever the stage.
    (Reply(421, "Try again later, closing connection", "4.7.0"), MAIL, True),
    (Reply(421, "Service not available"), CONNECT, True),
    (Reply(421, "Try again later, closing connection", "4.7.0"), RCPT, True),
    (Reply(421, "Too many errors", "4.7.0"), DATA, True),
    # Providers' documented rate-limit codes, at any stage.
    (Reply(450, "Our system has detected an unusual rate of unsolicited mail", "4.7.28"), MAIL, True),
    (Reply(450, "Our system has detected an unusual rate of unsolicited mail", "4.7.28"), RCPT, True),
    (Reply(451, "The mail server [192.0.2.1] has been temporarily rate limited due to IP "
                "reputation", "4.7.650"), RCPT, True),
    (Reply(451, "Server busy. Please try again later from [192.0.2.1]", "4.7.500"), RCPT, True),
    (Reply(451, "Temporarily deferred due to unexpected volume [TSS04]", "4.7.0"), RCPT, True),
    # Sender-level stages: a 4.7.x, or words of rate limiting.
    (Reply(451, "Temporarily deferred due to unexpected volume", "4.7.0"), MAIL, True),
    (Reply(450, "Too many connections from your IP", "4.7.0"), CONNECT, True),
    (Reply(452, "Too many messages, slow down"), MAIL, True),
    (Reply(451, "The sender's SPF record does not pass", "4.7.27"), MAIL, False),
    (Reply(451, "DKIM signature did not verify", "4.7.30"), MAIL, False),
    (Reply(452, "Too many recipients", "4.5.3"), MAIL, False),
    # Per recipient or per message: never a reason to pause the provider.
    (Reply(452, "Too many messages, slow down"), RCPT, False),
    (Reply(450, "The user you are trying to contact is receiving mail at a rate that prevents "
                "additional messages from being delivered", "4.2.1"), RCPT, False),
    (Reply(452, "Too many recipients", "4.5.3"), RCPT, False),
    (Reply(452, "Mailbox full", "4.2.2"), RCPT, False),
    (Reply(451, "Message deferred for content review", "4.7.1"), DATA, False),
    (Reply(550, "Rate limited permanently", "5.7.1"), MAIL, False),
    (Reply(250, "ok"), MAIL, False),
])
def test_which_replies_are_throttling(reply: Reply, stage: Stage, throttle: bool) -> None:
    assert is_throttle_reply(reply, stage=stage) is throttle


@pytest.mark.parametrize(("reply", "stage"), [
    (Reply(450, "<u@b.test>: Recipient address rejected: Greylisted, see "
                "http://postgrey.schweikert.ch/help/b.test.html", "4.7.1"), RCPT),
    (Reply(451, "Greylisted, please try again in 300 seconds", "4.7.1"), RCPT),
    (Reply(450, "<u@b.test>: Recipient address rejected: Greylisted", "4.2.0"), RCPT),
    (Reply(451, "Please try again later", "4.7.1"), RCPT),
    (Reply(451, "Temporarily deferred"), RCPT),
    (Reply(450, "Try again later"), RCPT),
    (Reply(451, "Greylisted, please try again later", "4.7.1"), DATA),
    (Reply(451, "Greylisting in action, please come back later", "4.7.1"), MAIL),
])
def test_greylisting_is_no_throttle(reply: Reply, stage: Stage) -> None:
    """With VERP every message is a new greylisting triplet: counting it would keep a whole
    provider group paused."""
    assert not is_throttle_reply(reply, stage=stage)


DEFAULTS = GroupLimits(connections=10, messages_per_connection=100, messages_per_minute=0.0)


@pytest.mark.parametrize(("host", "group"), [
    ("gmail-smtp-in.l.google.com", "google"),
    ("ASPMX.L.GOOGLE.COM.", "google"),
    ("alt1.gmr-smtp-in.l.googlemail.com", "google"),
    ("mta5.am0.yahoodns.net", "yahoo"),
    ("hotmail-com.olc.protection.outlook.com", "outlook"),
    ("contoso-com.mail.protection.outlook.com", "office365"),
    ("mx01.mail.icloud.com", "apple"),
    ("mx00.emig.gmx.net", "gmx"),
    ("mx-ha02.web.de", "gmx"),
    ("mxs.mail.ru", "mailru"),
    ("mx.yandex.net", "yandex"),
    ("mx1a1.comcast.net", "comcast"),
    ("mx1.example.co.uk", "example.co.uk"),
    ("mx.b.test", "b.test"),
    ("[127.0.0.1]", "[127.0.0.1]"),
    ("localhost", "localhost"),
])
def test_groups_come_from_the_mx_host(host: str, group: str) -> None:
    table = ProviderTable(BUILTIN_PROVIDERS, DEFAULTS)
    assert table.group_of_host(host) == group


def test_builtin_limits_overrides_and_process_shares() -> None:
    rules = merge_rules(BUILTIN_PROVIDERS, [
        ProviderRule("google", connections=3),
        ProviderRule("example.net", messages_per_minute=10.0),
        ProviderRule("bigcorp", mx_suffixes=(".mx.bigcorp.example",), connections=2),
    ])
    table = ProviderTable(rules, DEFAULTS)
    assert table.limits("google") == GroupLimits(3, 50, 6000.0)  # override, built-in, built-in
    assert table.limits("apple") == GroupLimits(10, 5, 6000.0)
    assert table.limits("mailru") == GroupLimits(10, 100, 6000.0)  # grouped, default limits
    assert table.limits("example.net") == GroupLimits(10, 100, 10.0)
    assert table.group_of_host("in1.mx.bigcorp.example") == "bigcorp"
    assert table.limits("bigcorp").connections == 2
    assert table.limits("unknown.test") == DEFAULTS
    shared = ProviderTable([share_rule(r, 2) for r in rules], DEFAULTS)
    assert shared.limits("google") == GroupLimits(1, 50, 3000.0)
    assert shared.limits("comcast") == GroupLimits(12, 1000, 3000.0)


def test_registered_domain() -> None:
    assert registered_domain("a.b.example.com.") == "example.com"
    assert registered_domain("mx") == "mx"
