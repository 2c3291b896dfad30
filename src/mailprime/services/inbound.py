"""Inbound SMTP policy: the SmtpHandler behind the MX and submission listeners.

Theory of operation. The driver (net.smtp_server) owns the wire; one `InboundSession` per
connection turns protocol events into decisions:
  connect -> HELO -> [AUTH] -> MAIL -> RCPT* -> DATA chunks -> end (durable accept) -> MAIL ...
MX role: recipients must resolve to a local account or alias (else 550 5.1.1; non-local domains
are refused with 554 5.7.1, so it is never an open relay). Submission role: AUTH first (530 5.7.0),
the sender must be the account's own address (policy "own") and any recipient is accepted.
The body is buffered up to the message-size limit the protocol core enforces; at the end the
service prepends a Received header (and Message-ID/Date on submission when missing), then
`MailStore.accept` commits it durably before the 250 is returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailprime.domain.address import Address
from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError, InvalidAddress
from mailprime.domain.ids import new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DsnNotify,
    DsnRet,
    EnvelopeRecipient,
    LocalDelivery,
    Priority,
)
from mailprime.logline import emit
from mailprime.message.headers import build_received, missing_header_lines
from mailprime.proto.smtp.types import AuthOutcome, MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.passwords import verify_password
from mailprime.services.recipients import owns_address, resolve_recipient
from mailprime.storage.ports import DirectoryStore, Store

log = logging.getLogger("mailprime.smtpd")


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
    body: bytearray = field(default_factory=bytearray)


class InboundService:
    """Satisfies net.smtp_handler.SmtpHandler for one listener."""

    def __init__(self, store: Store, config: InboundConfig, clock: Clock,
                 on_queued: Callable[[], None] | None = None,
                 directory: DirectoryStore | None = None) -> None:
        self.store = store
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
        account = await self.service.directory.get_account(authcid.strip())
        ok = False
        if account is not None and not account.disabled and (not authzid or authzid == authcid):
            ok = await asyncio.to_thread(verify_password, account.password_hash, password)
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             sasl_method=mechanism, sasl_username=authcid, result="ok" if ok else "failed")
        if not ok or account is None:
            return AuthOutcome(ok=False)
        self.identity = account.address
        return AuthOutcome(ok=True, identity=account.address)

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
        tx.rcpt_addresses.append(recipient)
        return Reply(250, "Ok", "2.1.5")

    async def on_data_start(self) -> Reply | None:
        if self.tx is None or not self.tx.rcpt_addresses:
            return Reply(554, "No valid recipients", "5.5.1")
        return None

    async def on_data_chunk(self, chunk: bytes) -> None:
        if self.tx is not None:
            self.tx.body += chunk

    async def on_data_abort(self, reason: str) -> None:
        if self.tx is not None:
            self._log_reject(",".join(self.tx.rcpt_addresses), f"message dropped: {reason}")
        self.tx = None

    async def on_data_end(self) -> Reply:
        tx = self.tx
        self.tx = None
        if tx is None:
            return Reply(503, "Need MAIL command", "5.5.1")
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
            added = missing_header_lines(bytes(tx.body), hostname=self.service.config.hostname,
                                         when=now)
        content = trace + added + bytes(tx.body)
        acceptance = Acceptance(
            queue_id=queue_id,
            content=content,
            sender=tx.sender,
            local=tuple(tx.local),
            remote=tuple(tx.remote),
            priority=self.service.config.priority,
            dsn_ret=DsnRet(tx.params.ret) if tx.params.ret in ("FULL", "HDRS") else None,
            dsn_envid=tx.params.envid,
            smtputf8=tx.params.smtputf8,
            source=self.peer.listener,
            client=self._client(),
        )
        started = time.monotonic()
        try:
            await self.service.store.accept(acceptance)
        except DomainError as exc:
            emit(log, queue_id, logging.ERROR, status="not accepted", reason=exc.message)
            return Reply(451, "Local error in processing; try again later", "4.3.0")
        if tx.remote and self.service.on_queued is not None:
            self.service.on_queued()
        self.messages += 1
        self.recipients += len(tx.rcpt_addresses)
        emit(log, queue_id, listener=self.peer.listener, client=self._client(),
             sasl_username=self.identity or None, from_=f"<{tx.sender}>", size=len(content),
             nrcpt=len(tx.rcpt_addresses), local=len(tx.local), remote=len(tx.remote),
             commit_ms=round((time.monotonic() - started) * 1000, 1), status="accepted")
        return Reply(250, f"Ok: queued as {queue_id}", "2.0.0")

    async def on_reset(self) -> None:
        self.tx = None

    async def on_close(self) -> None:
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             helo=self.helo or None, tls="yes" if self.tls else "no",
             sasl_username=self.identity or None, messages=self.messages,
             rcpts=self.recipients, rejected=self.rejected,
             duration_s=round(time.monotonic() - self.started, 3), status="disconnect")

    # Helpers ------------------------------------------------------------------------------
    def _client(self) -> str:
        return f"[{self.peer.ip}]:{self.peer.port}"

    def _log_reject(self, recipient: str, why: str) -> None:
        emit(log, self.session_id, logging.INFO, listener=self.peer.listener,
             client=self._client(), helo=self.helo or None, to=f"<{recipient}>", status="reject",
             reason=why)
