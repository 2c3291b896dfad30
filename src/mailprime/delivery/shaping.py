"""Traffic shaping per provider group: a message rate, and adaptive back-off on throttling replies.

Theory of operation. Mailbox providers judge a sender by how it behaves towards *them*, not
towards one recipient domain: Gmail counts what reaches its MX hosts whatever domain the mail is
for. So every budget here belongs to a provider group (delivery.provider_groups names it from
the MX hosts) and the transport asks the `Shaper` before each message.

* Rate. Messages per minute are paced with GCRA (the generic cell rate algorithm, a token bucket
  kept as one "theoretical arrival time"): a group with rate r admits a message every 60/r
  seconds, with a burst tolerance of one second's worth. `admit` reserves the next slot at once.
  When that slot is within `hold_seconds` the caller sleeps until it (a short, bounded wait of the
  worker's task); otherwise the job is deferred to the slot's time, and successive deferrals are
  spread one interval apart so that they do not all come back together.
* Back-off (AIMD). A throttling reply (`is_throttle_reply`, below) halves the group's
  rate — half of what it actually sent in the last minute when that is lower than its cap,
  because halving an unused cap would slow nothing — and pauses the group for
  `backoff_seconds` × 2^(n-1) (n: throttles without `backoff_max_seconds` of quiet between
  them), at most `backoff_max_seconds`. Replies that arrive during a pause belong to the same
  episode (connections already in flight) and change nothing. While paused, `admit` says "defer
  until the pause ends": the worker records the jobs as deferred at once instead of holding
  slots. After the pause each quiet minute adds `recovery_percent` of the pre-throttle rate
  (additive increase) until the configured rate is back; a group without a configured rate
  gets its cap lifted once it is back at the pre-throttle rate.
* What throttles. A pause stops the whole group, so only a reply about *us* may cause one: a 421
  at any stage (RFC 5321 3.8: the service is closing the channel), a provider's documented
  rate-limit code at any stage (Gmail 4.7.28, Microsoft 4.7.500 and 4.7.650-652, Yahoo's
  [TS01]/[TSS04]), and at the stages that concern only the sender and its connection
  (greeting, EHLO, STARTTLS, MAIL) a 4.7.x other than an authentication or TLS failure, or a
  reply whose words say rate limiting. At RCPT and DATA a transient reply concerns the one
  recipient or message: greylisting above all ("450 4.7.1 Greylisted", "451 try again later",
  "temporarily deferred"), which with VERP meets every message (each one a new sender, so a new
  greylisting triplet) and would otherwise keep a whole provider paused. Greylisting is left to
  the retry schedule.

Everything runs on an injected monotonic clock (tests drive it by hand); state lives in this
process only, so each worker process shapes its own share (runtime divides the limits).
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mailprime.logline import emit
from mailprime.message.bounce_reason import BounceReason, classify_reply
from mailprime.proto.smtp.types import Reply

log = logging.getLogger("mailprime.delivery.shaping")

# Tracked groups are bounded: a spam run to a million domains must not grow memory without limit.
# A group idle and unthrottled is forgotten first; its state is only its configured limits.
MAX_GROUPS = 10_000
EPSILON = 1e-6  # seconds
WINDOW = 60.0  # seconds over which the actual sending rate is measured
# Gmail's temporary authentication codes (PROVIDER-RULES.md): 4.7.23 PTR, 4.7.27 SPF, 4.7.29 TLS,
# 4.7.30 DKIM, 4.7.31 no DMARC, 4.7.32 alignment. A TLS or authentication problem (RFC 3463
# X.7.4-X.7.7, X.7.10-11) is not one either: slowing down fixes neither.
_NOT_THROTTLING = frozenset({"4.7.23", "4.7.27", "4.7.29", "4.7.30", "4.7.31", "4.7.32"})
# Rate-limit codes the providers document (PROVIDER-RULES.md): Gmail 4.7.28 "unusual rate of
# unsolicited mail"; Microsoft 4.7.500 "server busy", 4.7.650/4.7.651 "temporarily rate limited
# due to IP reputation", 4.7.652 "exceeded the maximum number of connections". They throttle
# whatever the stage they come at.
PROVIDER_RATE_CODES = frozenset({"4.7.28", "4.7.500", "4.7.650", "4.7.651", "4.7.652"})
# Yahoo's deferral tags: [TS01] complaints, [TSS04] unexpected volume (both "temporarily
# deferred"); [TS02]/[TS03] are permanent refusals, 5xx, and never reach this check.
_YAHOO_RATE = re.compile(r"\[tss?0[14]\]", re.IGNORECASE)
_GREYLISTING = re.compile(r"gr[ae]y[ -]?list", re.IGNORECASE)


class Stage(enum.Enum):
    """Where in the session a reply came: it decides what the reply can be about."""

    CONNECT = "connect"  # greeting, EHLO/HELO, STARTTLS: the client and its address
    MAIL = "mail"  # MAIL FROM: the sender
    RCPT = "rcpt"  # RCPT TO: one recipient
    DATA = "data"  # DATA or the last BDAT: this message


@dataclass(frozen=True, slots=True)
class GroupLimits:
    connections: int  # open connections to the group at once (idle ones in the pool count)
    messages_per_connection: int  # then the connection is closed and a new one opened
    messages_per_minute: float  # 0: no rate limit


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    enabled: bool = True  # False: rates only, replies change nothing
    hold_seconds: float = 5.0
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 3600.0
    recovery_percent: float = 10.0
    min_messages_per_minute: float = 1.0


@dataclass(frozen=True, slots=True)
class Admission:
    """`admit`'s answer: send after `wait` seconds (the slot is reserved), or, when
    `defer_until` is set (monotonic seconds), do not send now. `reason`: "paused" or "rate"."""

    wait: float = 0.0
    defer_until: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """A group's state for tests, logs and metrics. `rate` 0 means no limit."""

    group: str
    state: str  # "open", "paused" or "recovering"
    configured_rate: float
    rate: float
    paused_for: float  # seconds of pause left
    consecutive: int  # throttles in the current episode
    throttles: int  # throttles counted since this process started
    admitted: int
    deferred: int
    sent_last_minute: int


@dataclass(slots=True)
class _Group:
    limits: GroupLimits
    rate: float
    tat: float = 0.0  # GCRA theoretical arrival time
    next_deferral: float = 0.0
    paused_until: float = 0.0
    recovering: bool = False
    recovery_from: float = 0.0  # quiet minutes are counted from here
    target: float = 0.0  # rate to recover to
    step: float = 1.0  # messages per minute added per quiet minute
    consecutive: int = 0
    last_throttle: float | None = None
    throttles: int = 0
    admitted: int = 0
    deferred: int = 0
    seconds: deque[list[int]] = field(default_factory=deque)  # [second, messages] in WINDOW

    def note_sent(self, at: float) -> None:
        second = int(at)
        if self.seconds and self.seconds[-1][0] == second:
            self.seconds[-1][1] += 1
        else:
            self.seconds.append([second, 1])

    def sent_in_window(self, now: float) -> int:
        while self.seconds and self.seconds[0][0] <= now - WINDOW:
            self.seconds.popleft()
        return sum(count for _second, count in self.seconds)


def is_throttle_reply(reply: Reply, *, stage: Stage) -> bool:
    """True for a reply that asks the sender to slow down (see the module doc): a 421, a
    provider's rate-limit code, or at CONNECT/MAIL a 4.7.x (not an authentication or TLS
    failure: slowing down does not fix a DNS record) or rate-limiting words. Never greylisting."""
    if not reply.is_transient:
        return False
    if reply.code == 421:
        return True
    text = " ".join((reply.text, *reply.lines))
    verdict = classify_reply(reply.code, reply.enhanced, text)
    if verdict.status in PROVIDER_RATE_CODES or _YAHOO_RATE.search(text):
        return True
    if stage in (Stage.RCPT, Stage.DATA) or is_greylisting(reply):
        return False
    if verdict.status.startswith("4.7."):
        return verdict.status not in _NOT_THROTTLING and verdict.reason not in (
            BounceReason.AUTH_FAILURE, BounceReason.NETWORK)
    # 4.5.3 "too many recipients" is a per-transaction limit, not a rate.
    return verdict.reason is BounceReason.RATE_LIMITED and verdict.status != "4.5.3"


def is_greylisting(reply: Reply) -> bool:
    """A transient reply that names greylisting: a deferral of this (sender, recipient, client)
    triplet until it comes back, whatever the stage."""
    return reply.is_transient and bool(_GREYLISTING.search(" ".join((reply.text, *reply.lines))))


class Shaper:
    def __init__(self, limits_for: Callable[[str], GroupLimits], policy: AdaptivePolicy | None = None,
                 *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limits_for = limits_for
        self.policy = policy or AdaptivePolicy()
        self._now = monotonic
        self._groups: dict[str, _Group] = {}

    def limits(self, group: str) -> GroupLimits:
        return self._group(group).limits

    def paused_until(self, group: str) -> float | None:
        """The monotonic time the group's pause ends, or None when it is not paused."""
        state = self._group(group)
        return state.paused_until if state.paused_until > self._now() else None

    def admit(self, group: str) -> Admission:
        now = self._now()
        state = self._group(group)
        self._recover(group, state, now)
        if state.paused_until > now:
            state.deferred += 1
            return Admission(defer_until=state.paused_until, reason="paused")
        if state.rate <= 0:
            state.admitted += 1
            state.note_sent(now)
            return Admission()
        interval = 60.0 / state.rate
        tolerance = interval * (max(1.0, state.rate / 60.0) - 1.0)
        at = max(now, state.tat - tolerance)
        if at - now <= EPSILON:  # rounding of the interval sums, not a real wait
            at = now
        if at - now <= self.policy.hold_seconds:
            state.tat = max(state.tat, at) + interval
            state.admitted += 1
            state.note_sent(at)
            return Admission(wait=at - now)
        until = max(at, state.next_deferral)
        state.next_deferral = until + interval
        state.deferred += 1
        return Admission(defer_until=until, reason="rate")

    def throttled(self, group: str, reply: str) -> bool:
        """Records a throttling reply from the group (one line, for the log). Returns whether it
        started a new back-off (False during a pause, or with adaptation off)."""
        now = self._now()
        state = self._group(group)
        self._recover(group, state, now)
        if not self.policy.enabled or state.paused_until > now:
            return False
        policy = self.policy
        sent = state.sent_in_window(now) * (60.0 / WINDOW)
        current = state.rate if state.rate > 0 else math.inf
        basis = min(current, sent) if sent >= 1 else current
        if not state.recovering:
            state.target = state.limits.messages_per_minute or basis
            state.step = max(1.0, (basis if math.isfinite(basis) else 0.0) * policy.recovery_percent / 100)
        if math.isfinite(basis):  # without any measure of the pace, only the pause applies
            state.rate = max(policy.min_messages_per_minute, basis / 2)
            state.recovering = True
        quiet = state.last_throttle is None or now - state.last_throttle > policy.backoff_max_seconds
        state.consecutive = 1 if quiet else state.consecutive + 1
        state.last_throttle = now
        state.throttles += 1
        pause = min(policy.backoff_seconds * 2 ** (state.consecutive - 1), policy.backoff_max_seconds)
        state.paused_until = state.recovery_from = now + pause
        state.next_deferral = 0.0
        emit(log, "shaping", logging.WARNING, group=group, state="throttled",
             rate_per_min=_rate(state.rate), pause_s=round(pause, 1), consecutive=state.consecutive,
             reply=reply)
        return True

    def snapshot(self, group: str) -> GroupSnapshot:
        now = self._now()
        state = self._group(group)
        self._recover(group, state, now)
        paused_for = max(0.0, state.paused_until - now)
        return GroupSnapshot(
            group=group,
            state="paused" if paused_for else "recovering" if state.recovering else "open",
            configured_rate=state.limits.messages_per_minute, rate=state.rate,
            paused_for=paused_for, consecutive=state.consecutive, throttles=state.throttles,
            admitted=state.admitted, deferred=state.deferred,
            sent_last_minute=state.sent_in_window(now))

    # ---------------------------------------------------------------------------------------
    def _group(self, group: str) -> _Group:
        state = self._groups.get(group)
        if state is None:
            if len(self._groups) >= MAX_GROUPS:
                self._forget_one()
            limits = self._limits_for(group)
            state = self._groups[group] = _Group(limits, limits.messages_per_minute)
        return state

    def _forget_one(self) -> None:
        now = self._now()
        for name, state in self._groups.items():
            if not state.recovering and state.paused_until <= now and state.tat <= now:
                del self._groups[name]
                return
        del self._groups[next(iter(self._groups))]  # all busy: the oldest goes

    def _recover(self, group: str, state: _Group, now: float) -> None:
        """Additive increase: each whole quiet minute since the pause ended adds one step."""
        if not state.recovering or now < state.recovery_from + 60:
            return
        minutes = int((now - state.recovery_from) // 60)
        state.recovery_from += minutes * 60
        state.rate = min(state.target, state.rate + minutes * state.step)
        if state.rate >= state.target:
            state.rate = state.limits.messages_per_minute  # a group without a cap gets none again
            state.recovering = False
            emit(log, "shaping", group=group, state="recovered", rate_per_min=_rate(state.rate))
        else:
            emit(log, "shaping", group=group, state="recovering", rate_per_min=_rate(state.rate))
        if state.last_throttle is not None and now - state.last_throttle > self.policy.backoff_max_seconds:
            state.consecutive = 0


def _rate(rate: float) -> str:
    return "unlimited" if rate <= 0 else f"{rate:.1f}"


__all__ = [
    "PROVIDER_RATE_CODES",
    "AdaptivePolicy",
    "Admission",
    "GroupLimits",
    "GroupSnapshot",
    "Shaper",
    "Stage",
    "is_greylisting",
    "is_throttle_reply",
]
