"""Satisfies delivery.transport.Dialer with the asyncio SMTP client of net.smtp_client."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from mailprime.delivery.tls_reports import TlsFailure
from mailprime.delivery.transport import (
    DeliveryError,
    OutboundConnection,
    OutboundRecipient,
    TlsRequirement,
    TransactionReplies,
)
from mailprime.domain.mail import DsnRet
from mailprime.net.smtp_client import (
    RecipientSpec,
    SmtpClient,
    SmtpClientError,
    SmtpClientSession,
    SmtpTlsError,
)
from mailprime.net.tls import client_context
from mailprime.storage.ports import BlobReader


class _Connection:
    def __init__(self, session: SmtpClientSession) -> None:
        self.session = session

    @property
    def tls_active(self) -> bool:
        return self.session.tls_active

    @property
    def description(self) -> str:
        return self.session.description

    def is_usable(self) -> bool:
        return self.session.is_usable()

    async def transact(self, sender: str, recipients: Sequence[OutboundRecipient], content: BlobReader,
                       *, smtputf8: bool, ret: DsnRet | None, envid: str | None,
                       body_8bit: bool = False, require_tls: bool = False) -> TransactionReplies:
        specs = [RecipientSpec(r.address, r.notify, r.orcpt) for r in recipients]
        try:
            result = await self.session.send_message(
                # Chunks straight from the store: memory stays flat whatever the size.
                sender, specs, content.chunks(), size=content.size, smtputf8=smtputf8,
                body_8bit=body_8bit,
                ret=ret.value if ret is not None else None, envid=envid, require_tls=require_tls)
        except SmtpClientError as exc:
            raise DeliveryError(exc.reason, transient=True, reply=exc.reply) from exc
        return TransactionReplies(result.mail_reply, tuple(result.rcpt_replies), result.data_reply,
                                  dsn=self.session.capabilities.dsn)

    async def close(self) -> None:
        await self.session.close()


class SmtpDialer:
    def __init__(self, *, helo_name: str, ssl_context: ssl.SSLContext | None, require_tls: bool,
                 connect_timeout: float, command_timeout: float,
                 verify_context: ssl.SSLContext | None = None) -> None:
        self.client = SmtpClient(
            helo_name=helo_name, tls="required" if require_tls else "opportunistic",
            ssl_context=ssl_context, connect_timeout=connect_timeout,
            command_timeout=command_timeout)
        # For routes that demand verified TLS (MTA-STS, REQUIRETLS): the chain must reach a
        # trusted root and the certificate must match the MX name (RFC 8461 4.2). Built once:
        # loading a trust store costs more than a handshake.
        self._verify_context = verify_context or client_context(verify=True)
        self._plain_context = ssl_context or client_context(verify=False)

    async def connect(self, ip: str, port: int, *, server_name: str, source_ip: str | None = None,
                      tls: TlsRequirement | None = None) -> OutboundConnection:
        try:
            if tls is None:
                session = await self.client.open(ip, port, server_name=server_name,
                                                 source_ip=source_ip)
            else:
                # STARTTLS is mandatory; no plaintext fallback (RFC 8461 4.2, RFC 8689 4.1).
                session = await self.client.open(
                    ip, port, server_name=server_name, source_ip=source_ip, tls="required",
                    ssl_context=self._verify_context if tls.verify else self._plain_context)
        except SmtpTlsError as exc:
            raise TlsFailure(exc.reason, exc.kind) from exc
        except SmtpClientError as exc:
            raise DeliveryError(exc.reason, transient=True, reply=exc.reply) from exc
        return _Connection(session)
