"""Values shared by the SMTP server and client cores (RFC 5321, 3461, 3030, 4954)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: three-digit code, optional enhanced status (RFC 3463), one or more lines."""

    code: int
    text: str = ""
    enhanced: str | None = None
    lines: tuple[str, ...] = ()  # extra lines for multi-line replies (e.g. EHLO keywords)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def one_line(self) -> str:
        """The reply as one line, for logs and events."""
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        rest = " / ".join(self.lines)
        return " ".join(parts) + (f" / {rest}" if rest else "")

    def to_bytes(self) -> bytes:
        """Wire form. Multi-line replies use "code-" continuation (RFC 5321 4.2.1)."""
        all_lines = [self.text, *self.lines] if self.lines else [self.text]
        out = []
        for i, line in enumerate(all_lines):
            sep = " " if i == len(all_lines) - 1 else "-"
            prefix = f"{self.enhanced} " if self.enhanced and i == 0 else ""
            out.append(f"{self.code}{sep}{prefix}{line}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8")


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 RET/ENVID, 4954 AUTH)."""

    size: int | None = None
    body: str | None = None  # "7BIT", "8BITMIME" or "BINARYMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None  # xtext-decoded
    auth: str | None = None
    require_tls: bool = False  # RFC 8689 REQUIRETLS: relay only over verified TLS


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO (RFC 3461 NOTIFY and ORCPT)."""

    notify: tuple[str, ...] = ()  # e.g. ("SUCCESS", "FAILURE") or ("NEVER",)
    orcpt: str | None = None  # "addr-type;xtext" as received


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Input limits of the SMTP server core, each with the RFC section that sets or allows it."""

    max_line: int = 1000  # RFC 5321 4.5.3.1.6: a command line is at most 512; text lines 1000
    max_command_line: int = 512  # RFC 5321 4.5.3.1.4 (we accept up to max_line for extensions)
    max_message_size: int = 50 * 1024 * 1024  # advertised by SIZE (RFC 1870)
    max_recipients: int = 1000  # RFC 5321 4.5.3.1.8 requires at least 100
    max_unknown_commands: int = 10  # then 421 and close (anti-flood)
    max_auth_failures: int = 3
    max_transactions: int = 1000  # messages per connection


@dataclass(frozen=True, slots=True)
class ServerCapabilities:
    """What the server core advertises in EHLO; the listener's role decides."""

    hostname: str
    starttls: bool = False  # offered only before TLS
    auth_mechanisms: tuple[str, ...] = ()  # e.g. ("PLAIN", "LOGIN"), offered per policy
    chunking: bool = True
    dsn: bool = True
    smtputf8: bool = True
    pipelining: bool = True
    # RFC 8689: offered on TLS sessions only (2, 4.1). Offering it is a promise that delivery
    # keeps (delivery.requiretls); the runtime turns it on per [mta_sts] requiretls.
    requiretls: bool = False
    extra: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is connected, as the socket says."""

    ip: str
    port: int
    listener: str  # listener name from the config, e.g. "mx", "submission"
    local_ip: str = ""
    local_port: int = 0


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    ok: bool
    identity: str = ""  # the authenticated account address
    reply: Reply | None = None  # override of the default 235/535 reply
