"""Inbound SMTP policy: the SmtpHandler behind the MX and submission listeners.

Theory of operation. The driver (net.smtp_server) owns the wire; one `InboundSession` per
connection turns protocol events into decisions:
  connect -> HELO -> [AUTH] -> MAIL -> RCPT* -> DATA chunks -> end (durable accept) -> MAIL ...
MX role: recipients must resolve to a local account or alias (else 550 5.1.1; non-local domains
are refused with 554 5.7.1, so it is never an open relay). Submission role: AUTH first (530 5.7.0),
the sender must be the account's own address (policy "own") and any recipient is accepted.
The body streams into a storage `SpoolWriter` (memory up to the store's inline limit, a spool
file beyond it), so a session's memory stays bounded whatever the message size; only the header
section is kept aside. At the end the service prepends a Received header (and Message-ID/Date on
submission when missing, and, for submitted mail that leaves, the DKIM-Signature fields over the
body hashed while it streamed: services.dkim_keys) without copying the body, then
`MailStore.accept` commits it durably (adopting the spool file) before the 250 is returned.
An aborted or refused body's file is deleted at once. Remote recipients go to the local delivery
worker (`DeliveryHandoff`) already leased in that same accept, when it has room: no claim
transaction for them.
Addresses that take mail without a mailbox: VERP and FBL addresses (services.feedback) and the
List-Unsubscribe mailto address (services.unsubscribe_mail), handled at RCPT and end of data and
never filed. On the MX, a message filed for a local mailbox that answers mail we sent gets a
REPLIED event after its accept (services.replies) — unless mx_auth filed it into Junk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mailprime.domain.address import Address
from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError, InvalidAddress
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    DsnNotify,
    DsnRet,
    EnvelopeRecipient,
    EventKind,
    LocalDelivery,
    MessageContent,
    Priority,
    prepend,
)
from mailprime.logline import emit
from mailprime.message.dkim_canon import MessageHasher
from mailprime.message.dkim_stream import StreamedMessage
from mailprime.message.dsn import DsnAction, DsnRecipient, build_dsn, wants_dsn
from mailprime.message.headers import MAX_HEADER_SECTION, build_received, missing_header_lines
from mailprime.message.tls_required import asks_no_tls_policy
from mailprime.proto.smtp.types import AuthOutcome, MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.feedback import FeedbackService, FeedbackTarget
from mailprime.services.inject import Injector
from mailprime.services.list_consent import ListConsent, list_id_of
from mailprime.services.mail_auth import LoginCache, check_login
from mailprime.services.mx_auth import Envelope, MxAuthenticator
from mailprime.services.recipients import owns_address, resolve_recipient
from mailprime.services.replies import ReplyRecorder
from mailprime.services.unsubscribe_mail import MailtoUnsubscribe, UnsubscribeTarget
from mailprime.storage.ports import DirectoryStore, SpoolWriter, Store
from mailprime.storage.recent import RecentContent

log = logging.getLogger("mailprime.smtpd")

# The body octets kept in memory for the header checks: header_section() reads at most
# MAX_HEADER_SECTION + 2 (RFC 5322 2.2 header section, limit set in message.headers).
_HEAD_MAX = MAX_HEADER_SECTION + 2


class DeliveryHandoff(Protocol):
    """The local delivery worker, as the inbound service hands it just-accepted mail."""

    @property
    def lease_seconds(self) -> float: ...

    def direct_lease_owner(self) -> str | None:
        """Whom to lease the remote recipients to at accept; None: queue them unleased."""
        ...

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Runs jobs the accept leased to `direct_lease_owner()`."""
        ...


@dataclass(frozen=True, slots=True)
class InboundConfig:
    hostname: str
    role: str  # "mx" or "submission"
    sender_policy: str = "own"
    priority: Priority = Priority.NORMAL


@dataclass(slots=True)
class _Transaction:
    sender: str = ""
    params: MailParams = field(default_factory=MailParams)
    local: list[LocalDelivery] = field(default_factory=list)
    remote: list[EnvelopeRecipient] = field(default_factory=list)
    rcpt_addresses: list[str] = field(default_factory=list)
    # RCPTs filed into a local mailbox, with their NOTIFY and ORCPT: NOTIFY=SUCCESS is answered
    # with a "delivered" DSN once the message is accepted (RFC 3461 5.2.3).
    local_rcpts: list[EnvelopeRecipient] = field(default_factory=list)
    # The body: a storage writer, created with the first chunk (RFC 5321 4.5.3.1.7 size limit is
    # enforced by the protocol core), and its first octets for the header checks.
    spool: SpoolWriter | None = None
    head: bytearray = field(default_factory=bytearray)
    spool_failure: str = ""  # the writer failed mid-body (disk full): answered at end of data
    dkim: MessageHasher | None = None  # submission with a signer: hashes the body as it streams
    feedback: list[FeedbackTarget] = field(default_factory=list)  # VERP/FBL RCPTs: services.feedback
    # RCPTs at the List-Unsubscribe mailto address: services.unsubscribe_mail
    unsubscribe: list[UnsubscribeTarget] = field(default_factory=list)
    auth: StreamedMessage | None = None  # MX with verification: DKIM body hashes as it streams


def _dsn_ret(params: MailParams) -> DsnRet | None:
    """RET of the MAIL command; RFC 8689 5: a REQUIRETLS message is returned as if RET=HDRS
    (its body must not travel back over a path that may lack TLS), RET=FULL disregarded."""
    if params.require_tls and params.ret is not None:
        return DsnRet.HDRS
    return DsnRet(params.ret) if params.ret in ("FULL", "HDRS") else None


class InboundService:
    """Satisfies net.smtp_handler.SmtpHandler for one listener."""

    def __init__(self, store: Store, config: InboundConfig, clock: Clock, *,
                 on_queued: Callable[[], None] | None = None,
                 directory: DirectoryStore | None = None,
                 recent: RecentContent | None = None,
                 handoff: DeliveryHandoff | None = None,
                 logins: LoginCache | None = None,
                 dkim: DkimSigner | None = None,
                 feedback: FeedbackService | None = None,
                 mx_auth: MxAuthenticator | None = None,
                 replies: ReplyRecorder | None = None,
                 unsubscribe: MailtoUnsubscribe | None = None,
                 list_consent: ListConsent | None = None) -> None:
        self.store = store
        # Submitted list mail (a List-Id of ours) asks the campaigns' gate: services.list_consent
        self.list_consent = list_consent
        self.replies = replies  # REPLIED events for mail the MX files (services.replies)
        self.unsubscribe = unsubscribe  # the List-Unsubscribe mailto (services.unsubscribe_mail)
        self.mx_auth = mx_auth  # SPF/DKIM/DMARC/ARC (+ rspamd) on the MX role: services.mx_auth
        self.dkim = dkim  # signs submitted mail that leaves (submission role only)
        self.feedback = feedback  # bounces, complaints, suppression gate: services.feedback
        # Shared with IMAP and POP3 by the runtime: a password verified moments ago by any of
        # them is not verified (Argon2) again.
        self.logins = logins if logins is not None else LoginCache()
        self.recent = recent
        self.handoff = handoff
        # Look-ups per RCPT go through `directory` (runtime passes a CachedDirectory).
        self.directory: DirectoryStore = directory if directory is not None else store
        self.config = config
        self.clock = clock
        self.on_queued = on_queued  # wakes the delivery worker when remote mail was queued

    def new_session(self, peer: PeerInfo, tls: bool) -> InboundSession:
        return InboundSession(self, peer, tls)


class InboundSession:
    def __init__(self, service: InboundService, peer: PeerInfo, tls: bool) -> None:
        self.service = service
        self.peer = peer
        self.tls = tls
        self.helo = ""
        self.esmtp = False
        self.identity = ""  # authenticated account address
        self.tx: _Transaction | None = None
        self.started = time.monotonic()
        self.messages = 0
        self.recipients = 0
        self.rejected = 0
        self.session_id = new_queue_id()

    @property
    def _is_submission(self) -> bool:
        return self.service.config.role == "submission"

    # Connection ---------------------------------------------------------------------------
    async def on_connect(self) -> Reply | None:
        return None

    async def on_helo(self, name: str, extended: bool) -> Reply | None:
        self.helo = name
        self.esmtp = extended
        self.tx = None
        return None

    async def on_tls(self) -> None:
        self.tls = True
        self.helo = ""
        self.tx = None

    async def on_auth(self, mechanism: str, authzid: str, authcid: str, password: str) -> AuthOutcome:
        # The one login path of IMAP and POP3 too: an unknown user costs the same Argon2 time as
        # a known one (no address probing by timing), and the same authzid rules apply.
        check = await check_login(self.service.directory, authzid, authcid, password,
                                  cache=self.service.logins)
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             sasl_method=mechanism, sasl_username=authcid, result="ok" if check.ok else "failed",
             reason=check.failure.value if check.failure else None)
        if check.account is None:
            return AuthOutcome(ok=False)
        self.identity = check.account.address
        return AuthOutcome(ok=True, identity=check.account.address)

    # Transaction --------------------------------------------------------------------------
    async def on_mail(self, sender: str, params: MailParams) -> Reply:
        if self._is_submission and not self.identity:
            return Reply(530, "Authentication required", "5.7.0")
        if sender:
            try:
                Address.parse(sender)
            except InvalidAddress as exc:
                return Reply(553, f"Bad sender address: {exc.message}", "5.1.7")
        if (self._is_submission and self.service.config.sender_policy == "own"
                and (not sender or not await owns_address(self.service.directory, self.identity, sender))):
            self.rejected += 1
            return Reply(553, f"Sender address not owned by user {self.identity}", "5.7.1")
        self.tx = _Transaction(sender=sender, params=params)
        return Reply(250, "Ok", "2.1.0")

    async def on_rcpt(self, recipient: str, params: RcptParams) -> Reply:
        tx = self.tx
        if tx is None:
            return Reply(503, "Need MAIL command", "5.5.1")
        if self.service.feedback is not None:  # VERP/FBL addresses (MX), suppressions (submission)
            decision = await self.service.feedback.on_rcpt(
                submission=self._is_submission, sender=tx.sender, recipient=recipient)
            if decision.reply is not None:
                if decision.target is not None:
                    tx.feedback.append(decision.target)
                    tx.rcpt_addresses.append(recipient)
                else:
                    self.rejected += 1
                    self._log_reject(recipient, decision.log_reason)
                return decision.reply
        if self.service.unsubscribe is not None:  # unsubscribe@<local domain>: no mailbox
            taken = await self.service.unsubscribe.on_rcpt(recipient)
            if taken is not None:
                tx.unsubscribe.append(taken[1])
                tx.rcpt_addresses.append(recipient)
                return taken[0]
        try:
            resolution = await resolve_recipient(self.service.directory, recipient)
        except InvalidAddress as exc:
            self.rejected += 1
            return Reply(501, f"Bad recipient address: {exc.message}", "5.1.3")
        if not self._is_submission and not resolution.is_local_domain:
            self.rejected += 1
            self._log_reject(recipient, "554 5.7.1 relay access denied")
            return Reply(554, f"<{recipient}>: Relay access denied", "5.7.1")
        if not resolution.found:
            self.rejected += 1
            self._log_reject(recipient, "550 5.1.1 user unknown")
            return Reply(550, f"<{recipient}>: Recipient address rejected: User unknown", "5.1.1")
        notify = frozenset(DsnNotify(n) for n in params.notify if n in DsnNotify.__members__)
        for delivery in resolution.local:
            if all(d.account_id != delivery.account_id for d in tx.local):
                tx.local.append(LocalDelivery(delivery.account_id, recipient=recipient))
        for address in resolution.remote:
            tx.remote.append(EnvelopeRecipient(address, notify=notify, orcpt=params.orcpt))
        if resolution.local:
            tx.local_rcpts.append(EnvelopeRecipient(recipient, notify=notify, orcpt=params.orcpt))
        tx.rcpt_addresses.append(recipient)
        return Reply(250, "Ok", "2.1.5")

    async def on_data_start(self) -> Reply | None:
        if self.tx is None or not self.tx.rcpt_addresses:
            return Reply(554, "No valid recipients", "5.5.1")
        signer = self.service.dkim
        if (self._is_submission and signer is not None and self.tx.remote
                and await signer.signs_anything()):
            self.tx.dkim = signer.new_hasher()
        if not self._is_submission and self.service.mx_auth is not None:
            self.tx.auth = self.service.mx_auth.new_message()
        return None

    async def on_data_chunk(self, chunk: bytes) -> None:
        tx = self.tx
        if tx is None or tx.spool_failure:
            return
        if len(tx.head) < _HEAD_MAX:
            tx.head += chunk[:_HEAD_MAX - len(tx.head)]
        if tx.dkim is not None:
            tx.dkim.update(chunk)
        if tx.auth is not None:
            tx.auth.update(chunk)
        if tx.spool is None:
            tx.spool = self.service.store.new_spool_writer()
        try:
            await tx.spool.write(chunk)
        except DomainError as exc:  # the writer discarded itself; the rest of the body is skipped
            tx.spool_failure = exc.message
            emit(log, self.session_id, logging.ERROR, status="spool failed", reason=exc.message)

    async def on_data_abort(self, reason: str) -> None:
        if self.tx is not None:
            self._log_reject(",".join(self.tx.rcpt_addresses), f"message dropped: {reason}")
        await self._drop_tx()

    async def on_data_end(self) -> Reply:
        tx = self.tx
        self.tx = None
        if tx is None:
            return Reply(503, "Need MAIL command", "5.5.1")
        if tx.spool_failure:
            return Reply(452, "Insufficient system storage", "4.3.1")
        body: MessageContent = b""
        if tx.spool is not None:
            try:
                body = await tx.spool.finish()  # fsynced, if it went to a file
            except DomainError as exc:
                emit(log, self.session_id, logging.ERROR, status="not accepted", reason=exc.message)
                return Reply(451, "Local error in processing; try again later", "4.3.0")
        if tx.unsubscribe and self.service.unsubscribe is not None:  # applied, never stored
            final = await self.service.unsubscribe.on_data_end(
                tx.unsubscribe, bytes(tx.head), client_ip=self.peer.ip, session=self.session_id,
                others=bool(tx.local or tx.remote or tx.feedback))
            if final is not None:
                if tx.spool is not None:
                    await tx.spool.discard()
                return final
        if tx.feedback and self.service.feedback is not None:  # bounces/complaints: no mailbox
            done = await self.service.feedback.on_data_end(
                tx.feedback, body if isinstance(body, bytes) else bytes(tx.head),
                session=self.session_id, others=bool(tx.local or tx.remote))
            tx.local.extend(done.forward)  # senders who asked for DSNs (NOTIFY) get them
            if done.reply is not None:
                if tx.spool is not None:
                    await tx.spool.discard()
                return done.reply
        if self._is_submission and tx.remote and self.service.list_consent is not None:
            refused = await self._list_consent(tx, self.service.list_consent)
            if refused is not None:
                if tx.spool is not None:
                    await tx.spool.discard()
                return refused
        queue_id = new_queue_id()
        now = self.service.clock.now()
        trace = build_received(
            helo=self.helo or self.peer.ip,
            client_ip=self.peer.ip,
            client_name=None,
            by_host=self.service.config.hostname,
            queue_id=queue_id,
            recipient=tx.rcpt_addresses[0] if len(tx.rcpt_addresses) == 1 else None,
            esmtp=self.esmtp,
            tls=self.tls,
            authenticated=bool(self.identity),
            smtputf8=tx.params.smtputf8,
            when=now,
        )
        added = b""
        if self._is_submission:
            added = missing_header_lines(bytes(tx.head), hostname=self.service.config.hostname,
                                         when=now)
            if tx.remote and self.service.feedback is not None:  # Feedback-ID, signed by DKIM
                added += self.service.feedback.outbound_lines(bytes(tx.head), tx.sender)
        signature = await self._dkim_signature(tx, added)
        junk = False  # mx_auth filed the local deliveries into Junk (DMARC failure, spam)
        if tx.auth is not None and self.service.mx_auth is not None:
            verdict = await self.service.mx_auth.check(tx.auth, body, Envelope(
                self.peer.ip, self.helo, tx.sender, tuple(tx.rcpt_addresses), queue_id), tx.local, now)
            if verdict.reply is not None:  # refused (DMARC, spam): nothing is stored
                if tx.spool is not None:
                    await tx.spool.discard()
                return verdict.reply
            # It moves every delivery or none: a mailbox other than the one asked for is Junk.
            junk = any(after.mailbox != before.mailbox
                       for before, after in zip(tx.local, verdict.local, strict=False))
            body, trace, tx.local = verdict.content, trace + verdict.header, list(verdict.local)
        content = prepend(signature + trace + added, body)
        acceptance = Acceptance(
            queue_id=queue_id,
            content=content,
            sender=tx.sender,
            local=tuple(tx.local),
            remote=tuple(tx.remote),
            priority=self.service.config.priority,
            dsn_ret=_dsn_ret(tx.params),
            dsn_envid=tx.params.envid,
            smtputf8=tx.params.smtputf8,
            source=self.peer.listener,
            client=self._client(),
            # RFC 8689 4.1: tag the message; with REQUIRETLS the header field is ignored.
            require_tls=tx.params.require_tls,
            tls_optional=not tx.params.require_tls and asks_no_tls_policy(bytes(tx.head)),
        )
        handoff = self.service.handoff
        lease_to = handoff.direct_lease_owner() if handoff is not None and tx.remote else None
        started = time.monotonic()
        try:
            accepted = await self.service.store.accept(
                acceptance, lease_to=lease_to,
                lease_seconds=handoff.lease_seconds if handoff is not None else 0.0)
        except DomainError as exc:
            emit(log, queue_id, logging.ERROR, status="not accepted", reason=exc.message)
            return Reply(451, "Local error in processing; try again later", "4.3.0")
        finally:
            if tx.spool is not None:
                await tx.spool.discard()  # deletes the file unless the accept adopted it
        if tx.remote:
            if self.service.recent is not None and isinstance(content, bytes):
                self.service.recent.put(queue_id, content)  # first delivery skips a DB read
            if accepted.jobs and handoff is not None:
                handoff.submit(accepted.jobs)  # leased to it already: waking it would only claim nothing
            elif self.service.on_queued is not None:
                self.service.on_queued()
        self.messages += 1
        self.recipients += len(tx.rcpt_addresses)
        emit(log, queue_id, listener=self.peer.listener, client=self._client(),
             sasl_username=self.identity or None, from_=f"<{tx.sender}>", size=acceptance.size,
             nrcpt=len(tx.rcpt_addresses), local=len(tx.local), remote=len(tx.remote),
             commit_ms=round((time.monotonic() - started) * 1000, 1), status="accepted")
        if self.service.replies is not None and tx.local and not self._is_submission:
            await self.service.replies.on_accepted(bytes(tx.head), sender=tx.sender,
                                                   queue_id=queue_id, session=self.session_id,
                                                   junk=junk)
        # A DSN about a local delivery returns the headers only: those are in memory.
        original = content if isinstance(content, bytes) else signature + trace + added + bytes(tx.head)
        await self._report_local_delivery(queue_id, tx, original, now)
        return Reply(250, f"Ok: queued as {queue_id}", "2.0.0")

    async def on_reset(self) -> None:
        await self._drop_tx()

    async def on_close(self) -> None:
        await self._drop_tx()  # a connection lost mid-body leaves no spool file behind
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             helo=self.helo or None, tls="yes" if self.tls else "no",
             sasl_username=self.identity or None, messages=self.messages,
             rcpts=self.recipients, rejected=self.rejected,
             duration_s=round(time.monotonic() - self.started, 3), status="disconnect")

    # Helpers ------------------------------------------------------------------------------
    async def _drop_tx(self) -> None:
        tx, self.tx = self.tx, None
        if tx is not None and tx.spool is not None:
            await tx.spool.discard()

    def _client(self) -> str:
        return f"[{self.peer.ip}]:{self.peer.port}"

    async def _dkim_signature(self, tx: _Transaction, added: bytes) -> bytes:
        """The DKIM-Signature fields of a submitted message that leaves (RFC 6376), computed
        once here at accept time over the header section (with the Message-ID/Date we add) and
        the body hashed as it streamed in; b"" when its From domain has no active key."""
        signer = self.service.dkim
        if signer is None or tx.dkim is None:
            return b""
        head = tx.dkim.header_section
        if head is None:
            emit(log, self.session_id, logging.WARNING, status="not signed",
                 reason="header section too long")
            return b""
        return await signer.signature_for(added + head, tx.dkim.body_hash())

    async def _list_consent(self, tx: _Transaction, consent: ListConsent) -> Reply | None:
        """Drops the remote recipients the gate refuses for the message's list (services.
        list_consent); the reply refusing the message when nobody is left, else None. A gate
        that cannot answer (storage down) refuses it for now, as a failed accept does: sending
        list mail unchecked is what the gate exists to prevent."""
        list_id = list_id_of(bytes(tx.head))
        if list_id is None:
            return None
        try:
            verdict = await consent.refusals(list_id, [r.address for r in tx.remote],
                                             sender=tx.sender)
        except DomainError as exc:
            emit(log, self.session_id, logging.ERROR, status="not accepted", list=list_id,
                 reason=exc.message)
            return Reply(451, "Local error in processing; try again later", "4.3.0")
        if verdict is None or not verdict.refused:
            return None
        for address, why in verdict.refused.items():
            self.rejected += 1
            self._log_reject(address, f"list {verdict.list_name}: {why}")
        tx.remote = [r for r in tx.remote if r.address not in verdict.refused]
        tx.rcpt_addresses = [a for a in tx.rcpt_addresses if a not in verdict.refused]
        if tx.remote or tx.local:
            return None
        first = next(iter(verdict.refused.values()))
        return Reply(550, f"No recipient may get mail of list {verdict.list_name}: {first}",
                     "5.7.1")

    def _log_reject(self, recipient: str, why: str) -> None:
        emit(log, self.session_id, logging.INFO, listener=self.peer.listener,
             client=self._client(), helo=self.helo or None, to=f"<{recipient}>", status="reject",
             reason=why)

    async def _report_local_delivery(self, queue_id: QueueId, tx: _Transaction, original: bytes,
                                     arrival: datetime) -> None:
        """RFC 3461 5.2.3: the recipients filed into local mailboxes that asked NOTIFY=SUCCESS get
        one "delivered" DSN, with the ENVID and (headers only, 4.3) the original; never about a
        message from the null sender (6.2). The message is accepted already: a DSN that cannot
        be queued is logged, and the client still gets its 250."""
        wanted = [r for r in tx.local_rcpts if wants_dsn(r.notify, DsnAction.DELIVERED)]
        if not tx.sender or not wanted:
            return
        dsn = build_dsn(
            reporting_mta=self.service.config.hostname, original_sender=tx.sender,
            original_content=original, now=arrival, arrival_date=arrival,
            envid=tx.params.envid, ret_full=tx.params.ret == "FULL", queue_id=queue_id,
            recipients=[DsnRecipient(final_recipient=r.address, original_recipient=r.orcpt,
                                     action=DsnAction.DELIVERED, status="2.0.0",
                                     diagnostic="250 2.0.0 delivered to mailbox",
                                     diagnostic_type="x-mailprime", last_attempt=arrival)
                        for r in wanted])
        service = self.service
        try:
            dsn_id = await Injector(service.store, service.on_queued, service.directory,
                                    dkim=service.dkim).inject(
                "", [tx.sender], dsn, priority=Priority.TRANSACTIONAL, source="dsn")
            for r in wanted:
                await service.store.append(EventKind.DSN_SENT, queue_id, r.address,
                                           f"delivered DSN to <{tx.sender}>",
                                           (("action", "delivered"), ("dsn_queue_id", dsn_id or "")))
        except DomainError as exc:
            emit(log, queue_id, logging.ERROR, status="dsn failed", reason=exc.message)
            return
        emit(log, queue_id, status="dsn", action="delivered", dsn_id=dsn_id or "none",
             to=f"<{tx.sender}>", nrcpt=len(wanted))
