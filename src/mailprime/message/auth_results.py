"""What the MX concludes about a received message: `authenticate` runs SPF, DKIM, ARC and DMARC
and writes the Authentication-Results header field (RFC 8601); `remove_forged_results` drops
incoming Authentication-Results fields that claim to be ours (RFC 8601 5).

The order matters only for DMARC, which needs the SPF and DKIM verdicts; ARC is independent.
Nothing here raises on a hostile message: every verifier turns bad input into a result.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailprime.message.arc_verify import ArcResult, ArcVerdict, verify_arc
from mailprime.message.dkim_canon import CRLF, split_fields, split_message
from mailprime.message.dkim_verify import (
    DkimResult,
    DkimVerdict,
    normalize_line_ends,
    verify_dkim,
)
from mailprime.message.dmarc import Disposition, DmarcResult, DmarcVerdict, check_dmarc
from mailprime.message.resolver import Resolver
from mailprime.message.spf import SpfVerdict, check_spf

FIELD_NAME = "Authentication-Results"
# RFC 5322 2.1.1: lines SHOULD be at most 78 characters; each resinfo starts a line of its own.
FOLD_WIDTH = 78
# RFC 6008 2: header.b carries a prefix of b= long enough to tell signatures apart; 8 is the
# minimum it recommends.
B_PREFIX = 8
# RFC 2045 5.1 token: what a value may be without quotes (RFC 8601 2.2 "value").
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
# RFC 8601 2.3 pvalue may also be [local-part "@"] domain-name; a dot-atom local-part needs no quotes.
_ADDRESS = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*)?@"
                      r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    """Every verdict on one message, the header field to prepend (one line per resinfo, CRLF at
    the end) and the DMARC disposition the receiver should apply."""

    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict
    arc: ArcVerdict
    header: bytes
    disposition: Disposition


def quote_value(value: str) -> str:
    """RFC 8601 2.2 value: a token as is, else a quoted-string with \\ and " escaped."""
    if _TOKEN.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else "?" for c in escaped)
    return f'"{escaped}"'


def _pvalue(value: str) -> str:
    """RFC 8601 2.3 pvalue: an address form may go bare, anything else as a value."""
    if _ADDRESS.match(value):
        return value
    return quote_value(value)


def _comment(text: str) -> str:
    """An RFC 5322 3.2.2 comment with its specials escaped."""
    escaped = re.sub(r"([()\\])", r"\\\1", text)
    return "(" + "".join(c if c.isprintable() else "?" for c in escaped) + ")"


def _resinfos(spf: SpfVerdict, dkim: Sequence[DkimVerdict], dmarc: DmarcVerdict,
              arc: ArcVerdict) -> list[list[str]]:
    """Each resinfo as its words (method=result, comments, ptype.property=value)."""
    infos: list[list[str]] = []
    spf_property = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    spf_value = spf.sender if spf.identity == "mailfrom" else spf.domain
    infos.append([f"spf={spf.result}", f"{spf_property}={_pvalue(spf_value)}"])
    for verdict in dkim:
        words = [f"dkim={verdict.result}"]
        if verdict.result is not DkimResult.NONE:
            if verdict.reason and verdict.result is not DkimResult.PASS:
                words.append(_comment(verdict.reason))
            if verdict.domain:
                words.append(f"header.d={quote_value(verdict.domain)}")
            if verdict.identity:
                words.append(f"header.i={_pvalue(verdict.identity)}")
            if verdict.selector:
                words.append(f"header.s={quote_value(verdict.selector)}")
            if verdict.algorithm:
                words.append(f"header.a={quote_value(verdict.algorithm)}")
            if verdict.signature:
                words.append(f"header.b={quote_value(verdict.signature[:B_PREFIX])}")
        infos.append(words)
    words = [f"dmarc={dmarc.result}"]
    if dmarc.policy is not None:
        words.append(_comment(f"p={dmarc.policy} dis={dmarc.disposition}"))
    if dmarc.from_domain:
        words.append(f"header.from={quote_value(dmarc.from_domain)}")
    infos.append(words)
    infos.append([f"arc={arc.result}"])
    return infos


def build_header(authserv_id: str, spf: SpfVerdict, dkim: Sequence[DkimVerdict], dmarc: DmarcVerdict,
                 arc: ArcVerdict) -> bytes:
    """The Authentication-Results field (RFC 8601 2.2) with its final CRLF: the authserv-id on
    the first line, then each resinfo on a line of its own, folded before a property when a line
    would pass FOLD_WIDTH."""
    lines = [f"{FIELD_NAME}: {quote_value(authserv_id)};"]
    infos = _resinfos(spf, dkim, dmarc, arc)
    for index, words in enumerate(infos):
        end = ";" if index < len(infos) - 1 else ""
        line = "\t" + words[0]
        for word in words[1:]:
            if len(line) + 1 + len(word) + len(end) > FOLD_WIDTH:
                lines.append(line)
                line = "\t  " + word
            else:
                line += " " + word
        lines.append(line + end)
    return (CRLF.decode().join(lines) + CRLF.decode()).encode("utf-8")


def _authserv_id(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 2.2): the first word, after
    any comment, unquoted, lower case."""
    text = value.decode("utf-8", errors="replace").replace("\r\n", " ")
    text = re.sub(r"^\s*(\([^)]*\)\s*)*", "", text)
    match = re.match(r'\s*"((?:[^"\\]|\\.)*)"|\s*([^\s;()]+)', text)
    if match is None:
        return ""
    return (match.group(1) if match.group(1) is not None else match.group(2)).lower()


def remove_forged_results(message: bytes, authserv_id: str) -> bytes:
    """`message` without the Authentication-Results fields that carry our authserv-id (RFC 8601
    5: a receiver MUST remove or rename them, since only we may write them). Case-insensitive."""
    ours = authserv_id.lower()
    head, sep, body = message.partition(b"\r\n\r\n")
    fields: list[list[bytes]] = []  # each field's lines, continuation lines included
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [line for lines in fields if not _is_ours(lines, ours) for line in lines]
    return CRLF.join(kept) + sep + body


def _is_ours(lines: list[bytes], ours: str) -> bool:
    name, colon, value = CRLF.join(lines).partition(b":")
    return bool(colon) and name.strip(b" \t").lower() == b"authentication-results" and \
        _authserv_id(value) == ours


def from_values(message: bytes) -> list[str]:
    """The values of every From field of a message, unfolded."""
    head, _body = split_message(normalize_line_ends(message))
    return [v.replace(CRLF, b" ").decode("utf-8", errors="replace")
            for n, v in split_fields(head) if n.strip(b" \t").lower() == b"from"]


async def authenticate(message: bytes, client_ip: str, helo: str, mail_from: str, resolver: Resolver,
                       *, authserv_id: str, now: int,
                       sample: Callable[[], float] = random.random) -> AuthVerdicts:
    """SPF for the SMTP identities, every DKIM signature, the ARC chain and DMARC, with the
    Authentication-Results field to prepend. `now` (Unix time) is for DKIM x=; `sample` for
    DMARC pct=. The caller removes forged fields first (`remove_forged_results`)."""
    spf = await check_spf(resolver, client_ip, helo, mail_from)
    dkim = await verify_dkim(message, resolver, now)
    arc = await verify_arc(message, resolver)
    dmarc = await check_dmarc(resolver, from_values(message), spf, dkim, sample)
    header = build_header(authserv_id, spf, dkim, dmarc, arc)
    disposition = dmarc.disposition if dmarc.result is DmarcResult.FAIL else Disposition.NONE
    return AuthVerdicts(spf, dkim, dmarc, arc, header, disposition)


__all__ = [
    "FIELD_NAME",
    "ArcResult",
    "AuthVerdicts",
    "authenticate",
    "build_header",
    "from_values",
    "quote_value",
    "remove_forged_results",
]
