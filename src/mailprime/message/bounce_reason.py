"""Why a delivery failed: a reason from a fixed list, hard or soft, and the enhanced status code.

`classify_reply(code, enhanced, text)` reads one failure as a server or an MTA stated it: the
SMTP reply of a synchronous failure (the delivery worker's case), or the Status and
Diagnostic-Code of one recipient in a bounce (bounce_parse's case).

Theory of operation
-------------------
1. The status. The enhanced status code (RFC 3463 2: class.subject.detail) is taken from the
   argument, else from the reply text ("550 5.1.1 ...", "550-5.7.26 ...", qmail's "(#5.1.1)").
   The class is its first digit, else the basic reply code's (RFC 5321 4.2.1), else 4: a
   failure without any reply (connection refused, TLS handshake, timeout) is retried.
2. The reason. Enhanced codes carry the most precise meaning, so they decide first:
   provider codes (Microsoft's X.7.5xx-7xx, 5.1.10, 4.7.650...), then RFC 3463 / RFC 5248
   registry codes with one meaning (X.1.1 user unknown, X.2.2 mailbox full, X.7.26 multiple
   authentication checks failed...). Codes that servers use for many things (X.0.0, X.1.0,
   X.2.1, X.5.0, X.7.0, X.7.1, X.7.9 and every unknown code) defer to the text, read with an
   ordered list of patterns (first match wins: "unauthenticated" beats "blocked", "mailbox size
   limit" beats "size limit"); when no pattern matches, the code's subject decides (X.7.x is a
   policy block, X.4.x a network problem). Without an enhanced code the text decides, then the
   basic code (552: storage exceeded, RFC 5321 4.2.2).
3. Hard or soft. A class-5 failure is hard — the same message to the same address will fail
   again — except a full mailbox, rate limiting and an expired message, which may succeed
   later. Class 4 (and no reply at all) is soft. "Hard" is about the delivery, not about the
   address: a policy or authentication block is hard but says the sender must change, so the
   suppression layer decides per reason what to do with the address.
4. A status the reply did not carry is inferred as class + the reason's RFC 3463 subject and
   detail (user unknown -> X.1.1), or X.0.0, so every classification has one.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# Replies are at most 512 octets a line (RFC 5321 4.5.3.1.5) but multi-line replies and DSN
# diagnostics are joined; read at most this much so a hostile bounce costs bounded work.
MAX_TEXT = 8192


class BounceReason(enum.StrEnum):
    """The fixed list of reasons a delivery fails, as operators and the event stream name them."""

    USER_UNKNOWN = "user_unknown"
    MAILBOX_FULL = "mailbox_full"
    DOMAIN_NOT_FOUND = "domain_not_found"
    POLICY = "policy"  # a policy or spam block: reputation, block lists, content
    AUTH_FAILURE = "auth_failure"  # SPF, DKIM, DMARC (e.g. Gmail 5.7.26, Microsoft 5.7.515)
    RATE_LIMITED = "rate_limited"
    MESSAGE_TOO_LARGE = "message_too_large"
    NETWORK = "network"  # connection, DNS look-up or TLS failure
    EXPIRED = "expired"  # retried until the queue lifetime ran out
    OTHER = "other"


# Reasons that do not make a class-5 failure hard: the address may take the message later.
SOFT_REASONS = frozenset({BounceReason.MAILBOX_FULL, BounceReason.RATE_LIMITED, BounceReason.EXPIRED})


@dataclass(frozen=True, slots=True)
class Classification:
    reason: BounceReason
    hard: bool
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1" (inferred if the reply had none)


# Status codes -------------------------------------------------------------------------------------

# RFC 3463 2: class "." subject "." detail; subject and detail are 1-3 digits. Not part of a
# longer dotted number (an IP address, Yahoo's "4.16.55.1").
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# The enhanced code right after the basic code: "550 5.1.1", "550-5.7.26", "550 #5.1.0".
_LEADING = re.compile(r"^\s*([245]\d\d)[ -]+#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_BASIC = re.compile(r"^\s*([2-5]\d\d)(?:[ -]|$)")


def parse_enhanced(value: str | None) -> str | None:
    """`value` as a normalised enhanced status code ("5.01.001" -> "5.1.1"), or None."""
    if not value:
        return None
    m = _ENHANCED.fullmatch(value.strip()[:16])
    if m is None:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def basic_code(text: str) -> int | None:
    """The RFC 5321 reply code that starts `text`, or None."""
    m = _BASIC.match(text[:16])
    return int(m.group(1)) if m else None


def enhanced_in(text: str, basic: int | None = None) -> str | None:
    """The first enhanced status code in a reply text: the one after the basic code, else any
    whose class agrees with the basic code's (RFC 3463 2: they must agree)."""
    text = text[:MAX_TEXT]
    m = _LEADING.match(text)
    if m is not None and m.group(1)[0] == m.group(2)[0]:
        return parse_enhanced(m.group(2))
    for found in _ENHANCED.finditer(text):
        if basic is None or str(basic)[0] == found.group(1):
            return f"{found.group(1)}.{int(found.group(2))}.{int(found.group(3))}"
    return None


# Codes with one meaning (RFC 3463 3 and the IANA registry of RFC 5248), by "subject.detail";
# the class only says permanent or transient.
_REGISTRY: dict[str, BounceReason] = {
    "1.1": BounceReason.USER_UNKNOWN,  # bad destination mailbox address
    "1.2": BounceReason.DOMAIN_NOT_FOUND,  # bad destination system address
    "1.3": BounceReason.USER_UNKNOWN,  # bad destination mailbox address syntax
    "1.6": BounceReason.USER_UNKNOWN,  # destination mailbox has moved, no forwarding address
    "1.7": BounceReason.POLICY,  # bad sender's mailbox address syntax
    "1.8": BounceReason.POLICY,  # bad sender's system address
    "2.2": BounceReason.MAILBOX_FULL,
    "2.3": BounceReason.MESSAGE_TOO_LARGE,  # message length exceeds administrative limit
    "3.1": BounceReason.MAILBOX_FULL,  # mail system full
    "3.4": BounceReason.MESSAGE_TOO_LARGE,  # message too big for system
    "4.1": BounceReason.NETWORK,  # no answer from host
    "4.2": BounceReason.NETWORK,  # bad connection
    "4.3": BounceReason.NETWORK,  # directory server (DNS) failure
    "4.4": BounceReason.DOMAIN_NOT_FOUND,  # unable to route
    "4.5": BounceReason.RATE_LIMITED,  # mail system congestion
    "4.7": BounceReason.EXPIRED,  # delivery time expired
    "5.3": BounceReason.RATE_LIMITED,  # too many recipients
    "7.2": BounceReason.POLICY,  # mailing list expansion prohibited
    "7.3": BounceReason.POLICY,  # security conversion required but not possible
    "7.4": BounceReason.NETWORK,  # security features not supported
    "7.5": BounceReason.NETWORK,  # cryptographic failure
    "7.6": BounceReason.NETWORK,  # cryptographic algorithm not supported
    "7.7": BounceReason.POLICY,  # message integrity failure
    "7.8": BounceReason.POLICY,  # authentication credentials invalid (SMTP AUTH)
    "7.10": BounceReason.NETWORK,  # encryption needed (RFC 5248)
    "7.11": BounceReason.NETWORK,  # encryption required for requested authentication mechanism
    "7.13": BounceReason.USER_UNKNOWN,  # user account disabled
    "7.16": BounceReason.MESSAGE_TOO_LARGE,  # message too big for specified priority
    "7.17": BounceReason.USER_UNKNOWN,  # mailbox owner has changed (RFC 7293)
    "7.18": BounceReason.USER_UNKNOWN,  # domain owner has changed (RFC 7293)
    "7.20": BounceReason.AUTH_FAILURE,  # no passing DKIM signature found (RFC 7372)
    "7.21": BounceReason.AUTH_FAILURE,  # no acceptable DKIM signature found
    "7.22": BounceReason.AUTH_FAILURE,  # no valid author-matched DKIM signature found
    "7.23": BounceReason.AUTH_FAILURE,  # SPF validation failed
    "7.24": BounceReason.AUTH_FAILURE,  # SPF validation error
    "7.25": BounceReason.AUTH_FAILURE,  # reverse DNS validation failed
    "7.26": BounceReason.AUTH_FAILURE,  # multiple authentication checks failed (Gmail: DMARC)
    "7.28": BounceReason.RATE_LIMITED,  # mail flood detected (Gmail 4.7.28: unusual rate)
    "7.29": BounceReason.AUTH_FAILURE,  # ARC validation failure (RFC 8617)
    "7.30": BounceReason.NETWORK,  # REQUIRETLS support required (RFC 8689)
}

# Microsoft's Exchange Online NDR codes (their "Fix email delivery issues for error code ..."
# pages), by full code since 4.7.5xx (server busy) and 5.7.5xx (blocked) mean different things.
_MICROSOFT: dict[str, BounceReason] = {
    "5.4.310": BounceReason.DOMAIN_NOT_FOUND,  # DNS domain does not exist
    "5.4.312": BounceReason.DOMAIN_NOT_FOUND,  # DNS query failed
    "5.4.316": BounceReason.EXPIRED,  # message expired, connection refused
    "4.4.316": BounceReason.NETWORK,  # connection refused
    "5.2.121": BounceReason.RATE_LIMITED,  # recipient's hourly receive limit from a sender
    "5.2.122": BounceReason.RATE_LIMITED,  # recipient's hourly receive limit
    "5.7.509": BounceReason.AUTH_FAILURE,  # sending domain fails DMARC with p=reject
    "5.7.515": BounceReason.AUTH_FAILURE,  # sending domain does not meet authentication level
}


def _microsoft(status: str) -> BounceReason | None:
    if status in _MICROSOFT:
        return _MICROSOFT[status]
    klass, subject, detail = (int(p) for p in status.split("."))
    if subject != 7 or detail < 500:
        return None
    if klass == 4 and detail < 700:
        return BounceReason.RATE_LIMITED  # 4.7.500-699: server busy, IP temporarily rate limited
    return BounceReason.POLICY  # 5.7.5xx spam abuse, 5.7.6xx banned IP, 5.7.7xx tenant blocked


# Codes used for too many things to trust alone: the text decides, else this fallback.
_GENERIC: dict[str, BounceReason] = {
    "1.0": BounceReason.USER_UNKNOWN,  # "550 5.1.0 Address rejected" is how many say it
    "1.10": BounceReason.USER_UNKNOWN,  # null MX (RFC 7505), or Microsoft's RecipientNotFound
    "2.1": BounceReason.USER_UNKNOWN,  # mailbox disabled; Gmail 4.2.1 also means rate
    "7.0": BounceReason.POLICY,
    "7.1": BounceReason.POLICY,  # delivery not authorized, message refused
    "7.9": BounceReason.POLICY,  # Yahoo's policy refusals, and its unauthenticated senders
    "7.27": BounceReason.POLICY,  # sender has null MX (RFC 7505); Gmail: SPF/DKIM do not pass
}
# When neither code nor text says more: what the subject (RFC 3463 3) is about.
_SUBJECT_FALLBACK: dict[str, BounceReason] = {
    "1": BounceReason.USER_UNKNOWN,
    "4": BounceReason.NETWORK,
    "7": BounceReason.POLICY,
}
# Basic reply codes (RFC 5321 4.2.2/4.2.3) that say something about the reason.
_BASIC_FALLBACK: dict[int, BounceReason] = {
    452: BounceReason.MAILBOX_FULL,  # insufficient system storage
    551: BounceReason.USER_UNKNOWN,  # user not local
    552: BounceReason.MAILBOX_FULL,  # exceeded storage allocation
    553: BounceReason.USER_UNKNOWN,  # mailbox name not allowed
}
# The status inferred for a reply that carried none: class + this subject.detail.
_INFERRED_DETAIL: dict[BounceReason, str] = {
    BounceReason.USER_UNKNOWN: "1.1",
    BounceReason.MAILBOX_FULL: "2.2",
    BounceReason.DOMAIN_NOT_FOUND: "1.2",
    BounceReason.POLICY: "7.1",
    BounceReason.MESSAGE_TOO_LARGE: "3.4",
    BounceReason.NETWORK: "4.1",
    BounceReason.EXPIRED: "4.7",
}


# Text patterns, in order: the first that matches decides. Lower-cased text, white space
# collapsed. Earlier rules are the more specific statements.
def _rules(*pairs: tuple[str, BounceReason]) -> tuple[tuple[re.Pattern[str], BounceReason], ...]:
    return tuple((re.compile(p), r) for p, r in pairs)


_TEXT_RULES = _rules(
    # What the reporting MTA says about its own queue outranks the last reply it quotes.
    (r"retry timeout exceeded|delivery time expired|message expired|been in the queue too long"
     r"|too long in (the )?queue|queue lifetime|maximum time in queue", BounceReason.EXPIRED),
    (r"unauthenticated|\bdmarc\b|\bspf\b|\bdkim\b|authentication (requirements|level|checks?|results)"
     r"|(fails?|failed|not pass(ing)?) (sender )?authentication|sender (is )?not authenticated"
     r"|ptr record|reverse dns", BounceReason.AUTH_FAILURE),
    (r"rate[- ]?limit|too many (messages|connections|recipients|mails|emails|concurrent)"
     r"|unusual rate|receiving mail at a rate|unexpected volume|temporarily deferred due to"
     r"|throttl|sending (quota|limit)|receive limit|slow down|exceeded the (maximum )?number of"
     r"|\bts(s)?0[14]\b|try again later.{0,40}(volume|rate)|mail flood", BounceReason.RATE_LIMITED),
    (r"\bspam|blocked|block ?list|blacklist|deny ?list|spamhaus|spamcop|barracuda|\bs?rbl\b|dnsbl"
     r"|reputation|policy reasons|prohibit|content rejected|virus|malware|phish"
     r"|permanently deferred|\bts0[23]\b|not accepted for policy|banned", BounceReason.POLICY),
    (r"mailbox (is )?full|mailbox size limit|over (the |their |its )?quota|quota (exceeded|exceed)"
     r"|exceeded (the |their )?(storage|quota)|out of storage|inbox is full|insufficient (system )?storage"
     r"|storage allocation|disk quota|mailbox has exceeded|mail ?box.{0,20}exceed|not enough (free )?space",
     BounceReason.MAILBOX_FULL),
    (r"message (size|length) exceeds|size exceeds|exceeds (the |our )?(fixed |maximum |allowed )*"
     r"(message )?size|(message|mail|email) (is )?too (large|big)|too (large|big) for|size limit"
     r"|message is larger than", BounceReason.MESSAGE_TOO_LARGE),
    (r"no such domain|domain (name )?not found|host not found|host or domain name not found"
     r"|name service error|domain (does not|doesn't|did not) exist|unroute?able|couldn't find any host"
     r"|null mx|no mx (record|host)|nxdomain|domain.{0,20}(is )?(invalid|unknown)",
     BounceReason.DOMAIN_NOT_FOUND),
    (r"user unknown|unknown (user|recipient|mailbox|address)|recipient unknown|no such (user|mailbox"
     r"|recipient|address|person|account)|does not exist|doesn't exist|(user|recipient|mailbox|address"
     r"|account) (was |is )?not found|recipientnotfound|mailbox unavailable|mailbox not available"
     r"|invalid (recipient|mailbox|address|user)|not a valid (mailbox|recipient|user|address)"
     r"|no mailbox here|bad destination mailbox|doesn't have an? .{0,40}account|address (is )?unknown"
     r"|(account|mailbox|address|user)\b.{0,40}\b(disabled|inactive|deactivated|suspended|closed"
     r"|terminated|expired)|not (a )?(local|our) (user|recipient)|user doesn't", BounceReason.USER_UNKNOWN),
    (r"\btls\b|starttls|\bssl\b|certificate|handshake|encryption (required|needed)"
     r"|connection (refused|timed out|reset|lost|closed|dropped)|timed? ?out|no route to host"
     r"|network is unreachable|lost connection|could not connect|unable to connect|connect to .{0,80}"
     r"(failed|refused)|dns (error|lookup failed|failure)|temporary (dns|lookup) failure",
     BounceReason.NETWORK),
    (r"access denied|not authori[sz]ed|relay(ing)? (access )?denied|not permitted|refused|\bpolicy\b"
     r"|rejected|denied", BounceReason.POLICY),
)


def _reason_from_text(text: str) -> BounceReason | None:
    for pattern, reason in _TEXT_RULES:
        if pattern.search(text):
            return reason
    return None


def _reason(status: str | None, basic: int | None, text: str) -> BounceReason:
    if status is not None:
        detail = status.partition(".")[2]
        specific = _microsoft(status) or _REGISTRY.get(detail)
        # Microsoft's DBEB: "550 5.4.1 Recipient address rejected: Access denied" is its
        # unknown-recipient answer, not "no answer from host".
        if detail == "4.1" and "recipient address rejected" in text:
            return BounceReason.USER_UNKNOWN
        if specific is not None:
            return specific
        from_text = _reason_from_text(text)
        if from_text is not None:
            return from_text
        fallback = _GENERIC.get(detail) or _SUBJECT_FALLBACK.get(detail.partition(".")[0])
        return fallback or BounceReason.OTHER
    from_text = _reason_from_text(text)
    if from_text is not None:
        return from_text
    return _BASIC_FALLBACK.get(basic or 0, BounceReason.OTHER)


def classify_reply(code: int | None, enhanced: str | None, text: str) -> Classification:
    """Classifies one failed delivery from its SMTP reply: `code` the basic reply code (or None:
    read from the text, or no reply at all), `enhanced` the enhanced status code if known
    separately (else read from the text), `text` the reply text, or the MTA's own words for a
    failure without a reply ("connect to mx.example.com: Connection refused")."""
    text = text[:MAX_TEXT]
    basic = code if code is not None else basic_code(text)
    if basic is not None and not 400 <= basic <= 599:
        basic = None  # not a failure reply (RFC 5321 4.2.1): as if there were none
    status = parse_enhanced(enhanced) or enhanced_in(text, basic)
    klass = status[0] if status else str(basic)[0] if basic else "4"
    lowered = " ".join(text.lower().split())
    reason = _reason(status, basic, lowered)
    hard = klass == "5" and reason not in SOFT_REASONS
    if status is None:
        status = f"{klass}.{_INFERRED_DETAIL.get(reason, '0.0')}"
    return Classification(reason, hard, status)


__all__ = [
    "SOFT_REASONS",
    "BounceReason",
    "Classification",
    "basic_code",
    "classify_reply",
    "enhanced_in",
    "parse_enhanced",
]
