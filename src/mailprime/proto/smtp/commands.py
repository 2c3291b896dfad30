"""Parsing of SMTP command arguments: paths (RFC 5321 4.1.2), ESMTP parameters of MAIL and RCPT
(RFC 1870, 6152, 6531, 3461, 4954) and BDAT (RFC 3030). Pure functions; a bad argument raises
`CommandError` carrying the reply.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from mailprime.proto import ProtocolError
from mailprime.proto.smtp import xtext
from mailprime.proto.smtp.types import MailParams, RcptParams, Reply, ServerCapabilities

# RFC 5321 4.5.3.1.1-3: local part <= 64 octets, domain <= 255 octets, path <= 256 octets
# counting the angle brackets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 3461 4.4: ENVID at most 100 characters; 4.2: ORCPT at most 500 characters.
MAX_ENVID = 100
MAX_ORCPT = 500
# SIZE and BDAT take a decimal count; 20 digits already exceed any real message.
MAX_DIGITS = 20

_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class CommandError(ProtocolError):
    """The argument of a command is wrong; `reply` is the answer to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.one_line())
        self.reply = reply


def _syntax(text: str) -> CommandError:
    return CommandError(Reply(501, text, "5.5.4"))


# Paths ---------------------------------------------------------------------------------------

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_NON_ASCII = "\u0080-\U0010ffff"
_LDH = "A-Za-z0-9"


def _mailbox_patterns(utf8: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(local part, domain) patterns; with SMTPUTF8 both admit non-ASCII (RFC 6531 3.3)."""
    extra = _NON_ASCII if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    quoted = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{extra}]|\\[\x20-\x7e])*"'
    local = re.compile(rf"{atom}(?:\.{atom})*|{quoted}")
    let_dig = f"[{_LDH}{extra}]"
    label = rf"{let_dig}(?:[{_LDH}\-{extra}]*{let_dig})?"
    domain = re.compile(rf"{label}(?:\.{label})*")
    return local, domain


_ASCII_PATTERNS = _mailbox_patterns(utf8=False)
_UTF8_PATTERNS = _mailbox_patterns(utf8=True)
# "<" ... ">" where a quoted local part may hold ">" or spaces (RFC 5321 4.1.2 Quoted-string).
_BRACKETED = re.compile(r'<((?:"(?:[^"\\]|\\.)*"|[^<>"\s])*)>')
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


def _valid_literal(text: str) -> bool:
    """An address literal, RFC 5321 4.1.3: [IPv4], [IPv6:...] or [tag:content]."""
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        elif ":" in inner:
            return _GENERAL_LITERAL.fullmatch(inner) is not None
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def _valid_mailbox(mailbox: str, utf8: bool) -> bool:
    local, at, domain = mailbox.rpartition("@")
    if not at or not local or not domain:
        return False
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(domain.encode("utf-8")) > MAX_DOMAIN:
        return False
    local_re, domain_re = _UTF8_PATTERNS if utf8 else _ASCII_PATTERNS
    if local_re.fullmatch(local) is None:
        return False
    if domain.startswith("["):
        return domain.endswith("]") and _valid_literal(domain)
    return domain_re.fullmatch(domain) is not None


def _strip_source_route(inner: str) -> str:
    """Drops an A-d-l ("@a,@b:") before the mailbox: RFC 5321 4.1.2 and appendix C say servers
    MUST accept and SHOULD ignore source routes."""
    if not inner.startswith("@"):
        return inner
    route, colon, mailbox = inner.partition(":")
    if not colon or not mailbox:
        return "\0"  # never a valid mailbox: the caller rejects it
    for hop in route.split(","):
        if not hop.startswith("@") or _ASCII_PATTERNS[1].fullmatch(hop[1:]) is None:
            return "\0"
    return mailbox


@dataclass(frozen=True, slots=True)
class _PathResult:
    mailbox: str  # "" for the null path
    rest: str  # what follows the closing ">" (the ESMTP parameters)


def _split_path(text: str, bad: CommandError) -> _PathResult:
    m = _BRACKETED.match(text)
    if m is None:
        raise bad
    rest = text[m.end() :]
    if rest and not rest.startswith(" "):
        raise bad
    if len(m.group(0).encode("utf-8")) > MAX_PATH:
        raise CommandError(Reply(501, "Path too long (RFC 5321 4.5.3.1.3)", bad.reply.enhanced))
    return _PathResult(_strip_source_route(m.group(1)), rest)


def _check_mailbox(mailbox: str, *, utf8: bool, bad: CommandError) -> None:
    if _valid_mailbox(mailbox, utf8):
        return
    if not utf8 and not mailbox.isascii() and _valid_mailbox(mailbox, True):
        # RFC 6531 3.4: non-ASCII addresses need SMTPUTF8 on the MAIL command.
        raise CommandError(Reply(553, "Non-ASCII address requires SMTPUTF8", "5.6.7"))
    raise bad


# ESMTP parameters ------------------------------------------------------------------------------

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")  # RFC 5321 4.1.2 esmtp-value


def _parse_params(rest: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for word in rest.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if _KEYWORD.fullmatch(key) is None or (eq and _VALUE.fullmatch(value) is None):
            raise _syntax(f"Malformed parameter {word[:40]!r}")
        key = key.upper()
        if key in seen:
            raise _syntax(f"Duplicate parameter {key}")
        seen.add(key)
        out.append((key, value if eq else None))
    return out


def _unknown(key: str) -> CommandError:
    return CommandError(Reply(555, f"Unsupported parameter {key}", "5.5.4"))


@dataclass(slots=True)
class _MailBuilder:
    caps: ServerCapabilities
    max_size: int
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    tls: bool = False  # the session is TLS-protected
    require_tls: bool = False


def _need(value: str | None, key: str) -> str:
    if value is None:
        raise _syntax(f"{key} needs a value")
    return value


def _mail_size(b: _MailBuilder, value: str | None) -> None:
    v = _need(value, "SIZE")
    if not v.isdigit() or not v.isascii() or len(v) > MAX_DIGITS:
        raise _syntax("SIZE must be a number")
    b.size = int(v)
    if b.size > b.max_size:  # RFC 1870 6.1: refuse at MAIL when the declared size is too big
        raise CommandError(Reply(552, "Message size exceeds fixed maximum message size", "5.3.4"))


def _mail_body(b: _MailBuilder, value: str | None) -> None:
    v = _need(value, "BODY").upper()
    if v not in ("7BIT", "8BITMIME"):  # RFC 6152; BINARYMIME (RFC 3030) is not offered
        raise _syntax("BODY must be 7BIT or 8BITMIME")
    b.body = v


def _mail_smtputf8(b: _MailBuilder, value: str | None) -> None:
    if not b.caps.smtputf8:
        raise _unknown("SMTPUTF8")
    if value is not None:
        raise _syntax("SMTPUTF8 takes no value")  # RFC 6531 3.4
    b.smtputf8 = True


def _mail_ret(b: _MailBuilder, value: str | None) -> None:
    if not b.caps.dsn:
        raise _unknown("RET")
    v = _need(value, "RET").upper()
    if v not in ("FULL", "HDRS"):  # RFC 3461 4.3
        raise _syntax("RET must be FULL or HDRS")
    b.ret = v


def _mail_envid(b: _MailBuilder, value: str | None) -> None:
    if not b.caps.dsn:
        raise _unknown("ENVID")
    v = _need(value, "ENVID")
    if len(v) > MAX_ENVID:
        raise _syntax("ENVID longer than 100 characters (RFC 3461 4.4)")
    try:
        b.envid = xtext.decode(v)
    except ValueError:
        raise _syntax("ENVID is not xtext") from None


def _mail_auth(b: _MailBuilder, value: str | None) -> None:
    if not b.caps.auth_mechanisms:
        raise _unknown("AUTH")
    v = _need(value, "AUTH")
    if v == "<>":  # RFC 4954 5: the submitter is unknown or not trusted
        b.auth = v
        return
    try:
        b.auth = xtext.decode(v)
    except ValueError:
        raise _syntax("AUTH= is not xtext") from None


def _mail_requiretls(b: _MailBuilder, value: str | None) -> None:
    # RFC 8689 2: the option is only valid in a TLS-protected session, and is offered only
    # there. Before STARTTLS on a listener that would offer it, say what is missing (RFC 3207
    # 4's 530; 5.7.10 "Encryption needed", the code RFC 8689 4.2.1 gives a missing TLS session);
    # elsewhere it is an extension this session does not have (RFC 5321 4.1.1.11: 555).
    if b.caps.requiretls and b.caps.starttls and not b.tls:
        raise CommandError(Reply(530, "Must issue a STARTTLS command first: REQUIRETLS needs a "
                                      "TLS session (RFC 8689)", "5.7.10"))
    if not (b.caps.requiretls and b.tls):
        raise _unknown("REQUIRETLS")
    if value is not None:
        raise _syntax("REQUIRETLS takes no value")  # RFC 8689 3
    b.require_tls = True


_MAIL_PARAMS: dict[str, Callable[[_MailBuilder, str | None], None]] = {
    "SIZE": _mail_size,
    "BODY": _mail_body,
    "SMTPUTF8": _mail_smtputf8,
    "RET": _mail_ret,
    "ENVID": _mail_envid,
    "AUTH": _mail_auth,
    "REQUIRETLS": _mail_requiretls,
}


@dataclass(slots=True)
class _RcptBuilder:
    caps: ServerCapabilities
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


def _rcpt_notify(b: _RcptBuilder, value: str | None) -> None:
    if not b.caps.dsn:
        raise _unknown("NOTIFY")
    items = _need(value, "NOTIFY").upper().split(",")
    # RFC 3461 4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY, each at most once.
    if items == ["NEVER"]:
        b.notify = ("NEVER",)
        return
    if len(set(items)) != len(items) or not set(items) <= _NOTIFY_VALUES:
        raise _syntax("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    b.notify = tuple(items)


_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-.]+")
_ORCPT_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
_ORCPT_UTF8 = re.compile(r"(?:[!-*,-<>-~\u0080-\U0010ffff]|\+[0-9A-F]{2})+")


def _rcpt_orcpt(b: _RcptBuilder, value: str | None) -> None:
    if not b.caps.dsn:
        raise _unknown("ORCPT")
    v = _need(value, "ORCPT")
    addr_type, semi, addr = v.partition(";")
    if len(v) > MAX_ORCPT or not semi or not addr or _ADDR_TYPE.fullmatch(addr_type) is None:
        raise _syntax("ORCPT must be addr-type;xtext (RFC 3461 4.2)")
    # RFC 6533 3: the utf-8 address type may carry non-ASCII characters unencoded.
    pattern = _ORCPT_UTF8 if addr_type.lower() == "utf-8" else _ORCPT_XTEXT
    if pattern.fullmatch(addr) is None:
        raise _syntax("ORCPT address is not xtext")
    b.orcpt = v


_RCPT_PARAMS: dict[str, Callable[[_RcptBuilder, str | None], None]] = {
    "NOTIFY": _rcpt_notify,
    "ORCPT": _rcpt_orcpt,
}


# Commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailCommand:
    sender: str  # "" for the null reverse-path
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptCommand:
    recipient: str
    params: RcptParams


def _after_keyword(arg: str, keyword: str, usage: str) -> str:
    """Checks "FROM:" or "TO:" (any case) and returns what follows; tolerates spaces after the
    colon, which many clients send although RFC 5321 4.1.1.2 has none."""
    if arg[: len(keyword)].upper() != keyword:
        raise _syntax(f"Syntax: {usage}")
    return arg[len(keyword) :].lstrip(" ")


def parse_mail(arg: str, caps: ServerCapabilities, max_size: int, *,
               tls: bool = False) -> MailCommand:
    """`arg` is everything after "MAIL "; `tls`: the session is TLS-protected."""
    rest = _after_keyword(arg, "FROM:", "MAIL FROM:<address> [parameters]")
    bad = CommandError(Reply(501, "Bad sender address syntax", "5.1.7"))
    path = _split_path(rest, bad)
    builder = _MailBuilder(caps, max_size, tls=tls)
    for key, value in _parse_params(path.rest):
        handler = _MAIL_PARAMS.get(key)
        if handler is None:
            raise _unknown(key)  # RFC 5321 4.1.1.11 / RFC 1869: 555 for unknown parameters
        handler(builder, value)
    if path.mailbox:
        _check_mailbox(path.mailbox, utf8=builder.smtputf8, bad=bad)
    params = MailParams(
        size=builder.size,
        body=builder.body,
        smtputf8=builder.smtputf8,
        ret=builder.ret,
        envid=builder.envid,
        auth=builder.auth,
        require_tls=builder.require_tls,
    )
    return MailCommand(path.mailbox, params)


def parse_rcpt(arg: str, caps: ServerCapabilities, *, smtputf8: bool) -> RcptCommand:
    """`arg` is everything after "RCPT "; `smtputf8` is whether MAIL carried SMTPUTF8."""
    rest = _after_keyword(arg, "TO:", "RCPT TO:<address> [parameters]")
    bad = CommandError(Reply(501, "Bad recipient address syntax", "5.1.3"))
    path = _split_path(rest, bad)
    builder = _RcptBuilder(caps)
    for key, value in _parse_params(path.rest):
        handler = _RCPT_PARAMS.get(key)
        if handler is None:
            raise _unknown(key)
        handler(builder, value)
    # RFC 5321 4.1.1.3: "<Postmaster>" without a domain must be accepted.
    if path.mailbox.lower() != "postmaster":
        if not path.mailbox:
            raise bad
        _check_mailbox(path.mailbox, utf8=smtputf8, bad=bad)
    return RcptCommand(path.mailbox, RcptParams(notify=builder.notify, orcpt=builder.orcpt))


_BDAT = re.compile(r"([0-9]{1,20})(?: +(LAST))? *", re.IGNORECASE)


def parse_bdat(arg: str) -> tuple[int, bool]:
    """`BDAT <size> [LAST]` (RFC 3030 2): returns (size, last)."""
    m = _BDAT.fullmatch(arg)
    if m is None:
        raise _syntax("Syntax: BDAT <size> [LAST]")
    return int(m.group(1)), m.group(2) is not None
