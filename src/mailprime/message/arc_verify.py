"""ARC chain validation (RFC 8617 5.2) with dkimpy, its keys fetched through our DNS port.

Theory of operation. dkimpy's `arc_verify` does the cryptography and the chain rules (the newest
ARC-Message-Signature must validate, every ARC-Seal must validate, instance 1 carries cv=none and
every later one cv=pass) but asks for keys with a blocking `dnsfunc`. DNS belongs to our async
Resolver port, so `verify_arc` first reads the d= and s= of every ARC-Seal and
ARC-Message-Signature, fetches those key records through the port (at most MAX_KEYS names),
and then runs dkimpy with a `dnsfunc` that answers from what was fetched. A key look-up that
failed temporarily makes the chain's result `fail` with a reason saying so (RFC 8617 has no
temperror for arc=; the sender's chain is not trusted this time).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import dkim

from mailprime.message.dkim_canon import split_fields, split_message
from mailprime.message.dkim_verify import normalize_line_ends, parse_tag_list
from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, Resolver

# RFC 8617 4.2.1: at most 50 ARC sets; each names up to two keys. Verifying more keys than this
# is not worth the look-ups: a chain needing more fails.
MAX_KEYS = 20
# RFC 8617 4.2.1: instance numbers run from 1 to 50.
MAX_INSTANCE = 50
_ARC_SIGNED = (b"arc-seal", b"arc-message-signature")
_KEY_NAME = re.compile(r"^[a-z0-9._-]+$")


class ArcResult(enum.StrEnum):
    """RFC 8617 4.4 chain validation status, as arc= in Authentication-Results."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 (a result, not a password)
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    result: ArcResult
    instances: int = 0  # how many ARC sets the message carries
    reason: str = ""


async def verify_arc(message: bytes, resolver: Resolver) -> ArcVerdict:
    """The chain validation status of `message` (RFC 8617 5.2)."""
    message = normalize_line_ends(message)
    head, _body = split_message(message)
    fields = split_fields(head)
    names: set[str] = set()
    instances: set[str] = set()
    for name, value in fields:
        if name.strip(b" \t").lower() not in _ARC_SIGNED:
            continue
        try:
            tags = parse_tag_list(value.decode("ascii", errors="replace"))
        except ValueError:
            return ArcVerdict(ArcResult.FAIL, len(instances), "malformed ARC header field")
        instances.add(tags.get("i", ""))
        key_name = f"{tags.get('s', '')}._domainkey.{tags.get('d', '')}".lower()
        if _KEY_NAME.match(key_name) is None:
            return ArcVerdict(ArcResult.FAIL, len(instances), "ARC field without a usable d= or s=")
        names.add(key_name)
    if not names:
        return ArcVerdict(ArcResult.NONE, 0, "no ARC sets")
    if len(names) > MAX_KEYS or len(instances) > MAX_INSTANCE:
        return ArcVerdict(ArcResult.FAIL, len(instances), "too many ARC sets or keys")
    keys: dict[str, bytes] = {}
    for key_name in sorted(names):
        try:
            records = await resolver.txt(key_name)
        except (DnsNxDomain, DnsNoData):
            continue  # dkimpy then finds no key: that signature fails
        except DnsError as exc:
            return ArcVerdict(ArcResult.FAIL, len(instances), f"key look-up failed, try later: {exc}")
        if len(records) == 1:
            keys[key_name] = records[0].joined

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return keys.get(name.decode("ascii", errors="replace").rstrip(".").lower())

    try:
        cv, _results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
    except Exception as exc:  # dkimpy raises many types on hostile input; none may escape
        return ArcVerdict(ArcResult.FAIL, len(instances), f"unverifiable ARC chain: {type(exc).__name__}")
    reason = comment if isinstance(comment, str) else ""
    if cv == dkim.CV_Pass:
        return ArcVerdict(ArcResult.PASS, len(instances), reason)
    # Anything else fails, dkimpy's CV_None included: ARC fields are present, so "no chain" is
    # not an honest answer (RFC 8617 5.2 step 2: fields without a valid instance fail the chain).
    return ArcVerdict(ArcResult.FAIL, len(instances), reason)


__all__ = ["MAX_INSTANCE", "MAX_KEYS", "ArcResult", "ArcVerdict", "verify_arc"]
