"""The MX's verdict on a received message: SPF, DKIM, ARC and DMARC (and, when configured, an
rspamd spam score), written into the message and acted on before the 250.

Theory of operation. The inbound session asks `new_message()` for a `StreamedMessage` when DATA
starts on the MX listener and feeds it every piece of the body, so the DKIM body hashes are ready
when the body ends, whatever its size (memory: the header section and a partial line). At end of
data `check()` runs, before anything is stored:

1. Forged results: Authentication-Results fields that carry our authserv-id are removed (RFC 8601
   5: only we may write them). A message held in memory (up to the store's inline limit) is
   rewritten; a spooled one cannot be (the file is written and fsynced already, and storage
   offers no rewrite), so it is refused with 550 5.7.1 asking the sender to remove the field.
2. The look-ups run at once: SPF (RFC 7208) for the envelope, every DKIM signature's key, the ARC
   keys, and the DMARC record of the From domain (prefetched into the resolver's cache; DMARC
   itself needs the SPF and DKIM verdicts, so `check_dmarc` runs after them and reads the cache).
   ARC needs the whole message (dkimpy checks the newest AMS body hash itself): a spooled message
   with ARC sets gets arc=fail "not verified". rspamd, when configured, scans in parallel.
3. The Authentication-Results field (RFC 8601) is returned for the session to add right below
   its own Received field (with any X-Spam-* fields after it).
4. DMARC: a FAIL whose policy (after pct sampling, RFC 7489 6.6.4) is reject or quarantine takes
   the configured action (RFC 7489 6.7 leaves it to the receiver): "reject" answers 550 5.7.1
   naming the From domain's policy (RFC 7489 10.3's wording), "junk" files every local delivery
   into the account's \\Junk mailbox (RFC 6154), "none" delivers. Local policy overrides that
   RFC 7489 allows (e.g. trusting a forwarder's ARC seal) are not applied: the ARC verdict is
   recorded for the reader, nothing more.
5. rspamd's action (services.rspamd): reject -> 550 5.7.1, soft reject -> 451 4.7.1, add header /
   rewrite subject -> junk; rspamd unreachable -> accept (fail open) or 451 4.7.1.

Any reject means the caller answers DATA with the reply and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from mailprime.domain.ids import AccountId
from mailprime.domain.mail import LocalDelivery, MessageContent, SpooledContent
from mailprime.logline import emit
from mailprime.message.arc_verify import ArcResult, ArcVerdict, verify_arc
from mailprime.message.auth_results import build_header, remove_forged_results
from mailprime.message.dkim_canon import CRLF, split_fields
from mailprime.message.dkim_stream import BodyDigest, HashKey, StreamedMessage, verify_streamed
from mailprime.message.dkim_verify import DkimResult, DkimVerdict
from mailprime.message.dmarc import (
    Disposition,
    DmarcResult,
    DmarcVerdict,
    author_domains,
    check_dmarc,
)
from mailprime.message.headers import MAX_HEADER_SECTION
from mailprime.message.resolver import DnsError, Resolver
from mailprime.message.spf import SpfVerdict
from mailprime.message.spf_memo import SpfMemo
from mailprime.proto.smtp.types import Reply
from mailprime.services.rspamd import Envelope, RspamdClient, Scan, SpamAction
from mailprime.storage.ports import MailStore

log = logging.getLogger("mailprime.mxauth")

_ARC_FIELDS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
JUNK_SPECIAL_USE = "\\Junk"  # RFC 6154 2


@dataclass(frozen=True, slots=True)
class MxAuthPolicy:
    """[authentication] as the MX applies it (runtime builds it from the settings)."""

    authserv_id: str
    dmarc_reject_action: str = "reject"  # "reject" | "junk" | "none"
    dmarc_quarantine_action: str = "junk"  # "junk" | "reject" | "none"
    junk_mailbox: str = "Junk"
    rspamd_fail_open: bool = True
    rspamd_junk_action: str = "junk"  # "junk" | "none"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the session does with the message: answer `reply` and store nothing, or store
    `content` with `header` on top, filing the local deliveries as `local` says."""

    reply: Reply | None
    header: bytes = b""
    content: MessageContent = b""
    local: tuple[LocalDelivery, ...] = ()


@dataclass(frozen=True, slots=True)
class _Verdicts:
    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict
    arc: ArcVerdict
    # Several From fields, or one listing authors of more than one domain: RFC 7489 6.6.1
    # leaves DMARC no single domain, and such mail "is typically rejected".
    several_authors: bool = False


class MxAuthenticator:
    """Shared by every session of one MX listener (its resolver's cache with them)."""

    def __init__(self, resolver: Resolver, policy: MxAuthPolicy, store: MailStore, *,
                 spam: RspamdClient | None = None,
                 sample: Callable[[], float] = random.random,
                 spf_memo: SpfMemo | None = None) -> None:
        self.resolver = resolver
        # One sender mailing many of our users repeats (IP, HELO, MAIL FROM): see spf_memo.
        self.spf_memo = spf_memo if spf_memo is not None else SpfMemo()
        self.policy = policy
        self.store = store
        self.spam = spam
        self.sample = sample  # DMARC pct= sampling (RFC 7489 6.6.4), injected for tests

    def new_message(self) -> StreamedMessage:
        return StreamedMessage(header_limit=MAX_HEADER_SECTION)

    async def check(self, streamed: StreamedMessage, content: MessageContent, envelope: Envelope,
                    local: Sequence[LocalDelivery], now: datetime) -> Decision:
        digests = streamed.finish()
        head, fields = streamed.header_section, streamed.fields
        ours = self.policy.authserv_id
        if head is None or fields is None:
            # Its fields are unknown past the limit: forged Authentication-Results could not be
            # removed nor DMARC applied, so such a message is refused rather than let through.
            return self._refuse(envelope, "header section too large", Reply(
                552, f"Message header section exceeds {MAX_HEADER_SECTION} octets", "5.3.4"))
        if head is not None and fields is not None and _has_forged(head, fields, ours):
            if isinstance(content, SpooledContent):
                return self._refuse(envelope, "forged Authentication-Results", Reply(
                    550, f"Message carries an Authentication-Results field in the name of {ours}; "
                    "remove it and send again", "5.7.1"))
            content = remove_forged_results(content, ours)
            head = remove_forged_results(head + CRLF, ours)[:-2]
            fields = split_fields(head)
        in_memory = content if isinstance(content, bytes) else None
        scan_task = (asyncio.ensure_future(self._scan(in_memory, envelope))
                     if self.spam is not None else None)
        try:
            verdicts = await self._verify(head, fields, digests, in_memory, envelope=envelope,
                                          now=int(now.timestamp()))
            scan = await scan_task if scan_task is not None else None
        finally:
            if scan_task is not None and not scan_task.done():
                scan_task.cancel()
        header = build_header(ours, verdicts.spf, verdicts.dkim, verdicts.dmarc, verdicts.arc)
        action = self._dmarc_action(verdicts)
        log_fields = _log_fields(verdicts, action, scan)
        if action == "reject" and verdicts.several_authors:
            return self._refuse(envelope, "DMARC", Reply(
                550, "Message has several From authors: DMARC cannot be applied to it "
                "(RFC 7489 6.6.1)", "5.7.1"), log_fields)
        if action == "reject":
            return self._refuse(envelope, "DMARC", Reply(
                550, f"Email rejected per DMARC policy for {verdicts.dmarc.from_domain} "
                f"(p={verdicts.dmarc.policy})", "5.7.1"), log_fields)
        junk = action == "junk"
        if scan is not None:
            header += scan.header
            spam_reply, spam_junk = self._spam_action(scan)
            if spam_reply is not None:
                return self._refuse(envelope, "spam", spam_reply, log_fields)
            junk = junk or spam_junk
        deliveries = tuple(local)
        if junk:
            deliveries = tuple([dataclasses.replace(d, mailbox=await self._junk_mailbox(d.account_id))
                                for d in deliveries])
        emit(log, envelope.queue_id, logging.INFO, status="checked", **log_fields,
             mailbox="junk" if junk and deliveries else None)
        return Decision(None, header, content, deliveries)

    # Verification -------------------------------------------------------------------------
    async def _verify(self, head: bytes, fields: list[tuple[bytes, bytes]],
                      digests: dict[HashKey, BodyDigest], message: bytes | None, *,
                      envelope: Envelope, now: int) -> _Verdicts:
        resolver = self.resolver
        spf_known = self.spf_memo.cached(envelope.client_ip, envelope.helo, envelope.mail_from)
        names = [name.strip(b" \t").lower() for name, _value in fields]
        authors = [value.replace(CRLF, b" ").decode("utf-8", errors="replace")
                   for name, (_n, value) in zip(names, fields, strict=True) if name == b"from"]
        domains = author_domains(authors)  # parsed once: prefetch, DMARC and the authors check
        dkim: tuple[DkimVerdict, ...] = (DkimVerdict(DkimResult.NONE, reason="no DKIM-Signature"),)
        arc = ArcVerdict(ArcResult.NONE, 0, "no ARC sets")
        # Only what needs DNS becomes a task (a task costs more than a cached look-up).
        async with asyncio.TaskGroup() as group:
            spf_task = (group.create_task(self.spf_memo.check(
                resolver, envelope.client_ip, envelope.helo, envelope.mail_from))
                if spf_known is None else None)
            group.create_task(self._prefetch_dmarc(authors, domains))
            dkim_task = (group.create_task(verify_streamed(head, digests, resolver, now, fields=fields))
                         if b"dkim-signature" in names else None)
            arc_task = (group.create_task(self._arc(names.count(b"arc-seal"), message))
                        if any(name in _ARC_FIELDS for name in names) else None)
        spf = spf_task.result() if spf_task is not None else spf_known
        assert spf is not None
        if dkim_task is not None:
            dkim = dkim_task.result()
        if arc_task is not None:
            arc = arc_task.result()
        dmarc = await check_dmarc(resolver, authors, spf, dkim, self.sample, domains=domains)
        several = len(authors) > 1 or len(set(domains)) > 1
        return _Verdicts(spf, dkim, dmarc, arc, several)

    async def _arc(self, sets: int, message: bytes | None) -> ArcVerdict:
        if message is None:
            return ArcVerdict(ArcResult.FAIL, sets, "not verified: message too large to hold in memory")
        return await verify_arc(message, self.resolver)

    async def _prefetch_dmarc(self, authors: Sequence[str], domains: Sequence[str]) -> None:
        """Warms the resolver's cache with the DMARC record check_dmarc reads first (RFC 7489
        6.6.3: at the From domain), while SPF and DKIM are being checked."""
        if len(authors) == 1 and len(domains) == 1 and "." in domains[0]:
            with contextlib.suppress(DnsError):  # check_dmarc asks again, reports temperror
                await self.resolver.txt(f"_dmarc.{domains[0]}")

    async def _scan(self, message: bytes | None, envelope: Envelope) -> Scan:
        assert self.spam is not None
        if message is None:
            return Scan(skipped="message over the in-memory limit, not scanned")
        return await self.spam.scan(message, envelope)

    # Actions ------------------------------------------------------------------------------
    def _dmarc_action(self, verdicts: _Verdicts) -> str:
        dmarc = verdicts.dmarc
        if verdicts.several_authors:
            return self.policy.dmarc_reject_action
        if dmarc.result is not DmarcResult.FAIL:
            return "none"
        if dmarc.disposition is Disposition.REJECT:
            return self.policy.dmarc_reject_action
        if dmarc.disposition is Disposition.QUARANTINE:
            return self.policy.dmarc_quarantine_action
        return "none"

    def _spam_action(self, scan: Scan) -> tuple[Reply | None, bool]:
        if scan.error:
            if self.policy.rspamd_fail_open:
                return None, False
            return Reply(451, "Spam scanner unavailable; try again later", "4.7.1"), False
        if scan.action is SpamAction.REJECT:
            return Reply(550, "Message rejected as spam", "5.7.1"), False
        if scan.action is SpamAction.SOFT_REJECT:
            return Reply(451, "Message deferred by the spam filter; try again later", "4.7.1"), False
        return None, scan.action is SpamAction.JUNK and self.policy.rspamd_junk_action == "junk"

    async def _junk_mailbox(self, account_id: AccountId) -> str:
        """The account's mailbox marked \\Junk (RFC 6154), else the configured name (which the
        store creates, marked \\Junk, on first delivery)."""
        for box in await self.store.list_mailboxes(account_id):
            if box.special_use == JUNK_SPECIAL_USE:
                return box.name
        return self.policy.junk_mailbox

    def _refuse(self, envelope: Envelope, why: str, reply: Reply,
                fields: dict[str, str] | None = None) -> Decision:
        emit(log, envelope.queue_id, logging.INFO, status="reject", reason=why,
             client=f"[{envelope.client_ip}]", from_=f"<{envelope.mail_from}>",
             reply=f"{reply.code} {reply.enhanced} {reply.text}", **(fields or {}))
        return Decision(reply)


def _has_forged(head: bytes, fields: Sequence[tuple[bytes, bytes]], ours: str) -> bool:
    if not any(name.strip(b" \t").lower() == b"authentication-results" for name, _v in fields):
        return False
    return remove_forged_results(head + CRLF, ours) != head + CRLF


def _log_fields(verdicts: _Verdicts, action: str, scan: Scan | None) -> dict[str, str]:
    fields = {"spf": str(verdicts.spf.result),
              "dkim": ",".join(f"{v.result}" + (f":{v.domain}" if v.domain else "")
                               for v in verdicts.dkim),
              "dmarc": str(verdicts.dmarc.result), "arc": str(verdicts.arc.result)}
    if verdicts.dmarc.from_domain:
        fields["header_from"] = verdicts.dmarc.from_domain
    if action != "none":
        fields["dmarc_action"] = action
    if scan is not None:
        fields.update(scan.log_fields())
    return fields


__all__ = ["Decision", "Envelope", "MxAuthPolicy", "MxAuthenticator"]
