"""DKIM verification (RFC 6376 6, RFC 8301, RFC 8463): every DKIM-Signature on a message, one
verdict each, keys fetched through the DNS port.

Theory of operation. `verify_dkim` finds the DKIM-Signature fields (top-down, at most
MAX_SIGNATURES) and checks each one on its own (`_verify_one`):

1. parse its tag-list (3.2, 3.5): a syntax error, a missing required tag, v= other than 1, an h=
   without From or an i= outside d= make the signature unusable -> `neutral` (RFC 8601 2.7.1:
   "contained syntax errors or were not otherwise able to be processed");
2. a= rsa-sha1 is never valid (RFC 8301 3.1) -> `fail`; an algorithm we do not know -> `permerror`;
   an x= in the past -> `fail` (signature expired, 3.5);
3. fetch the key record at <s>._domainkey.<d> (3.6.2): NXDOMAIN/NODATA, several records, a
   revoked (empty p=) or unparsable key, or a key type that does not match a= -> `permerror`;
   a DNS failure -> `temperror`; an RSA key under 1024 bits -> `fail` (RFC 8301 3.2);
4. canonicalize and hash the body (3.4.3, 3.4.4), cut to l= when present (3.5): a mismatch with
   bh= -> `fail`; an l= longer than the body -> `permerror`;
5. hash the signed header fields bottom-up (5.4.2) and the signature field itself with b= emptied
   and no final CRLF (3.7), and check b= with the key -> `pass` or `fail`.

A signature with l= shorter than the body passes but says so in `reason` and `partial_body`, so a
caller can treat it with the caution RFC 6376 8.2 asks for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailprime.message.dkim_canon import CRLF, relaxed_body, relaxed_header, split_fields, split_message
from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, Resolver

# RFC 6376 6.1: verifiers may limit how many signatures they check (each costs a DNS look-up
# and a public-key operation); more than this many are left unverified.
MAX_SIGNATURES = 10
# RFC 8301 3.2: RSA keys under 1024 bits MUST NOT be considered valid.
RSA_MIN_BITS = 1024
# RFC 8463 4: an Ed25519 public key is 32 octets.
ED25519_KEY_LENGTH = 32
# RFC 6376 3.5 "b=" is the signature; "bh=" must not be confused with it when emptying b=.
_B_TAG = re.compile(rb"(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*", re.IGNORECASE)
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FWS = re.compile(r"[ \t\r\n]+")


class DkimResult(enum.StrEnum):
    """RFC 8601 2.7.1 results of one signature ("none" when a message has none)."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 (a result, not a password)
    FAIL = "fail"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """One signature's verdict with the tags Authentication-Results reports (RFC 8601 2.7.1:
    header.d, header.i, header.s, header.a, header.b)."""

    result: DkimResult
    domain: str = ""  # d=, lower case
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i= (the AUID), "" when absent
    signature: str = ""  # b= without whitespace
    reason: str = ""
    partial_body: bool = False  # l= covered less than the whole body


class _Unusable(Exception):
    """Ends one signature's check with `result` and a reason."""

    def __init__(self, result: DkimResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def parse_tag_list(text: str) -> dict[str, str]:
    """RFC 6376 3.2 tag-list: "name=value" pairs split on ";", whitespace around names and values
    dropped. ValueError on a duplicate name, a pair without "=" or a bad name."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip(" \t\r\n"):
            continue  # a trailing ";" is allowed
        name, eq, value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not eq or _TAG_NAME.match(name) is None:
            raise ValueError(f"bad tag {part.strip()!r}")
        if name in tags:
            raise ValueError(f"duplicate tag {name!r}")
        tags[name] = value.strip(" \t\r\n")
    return tags


def normalize_line_ends(message: bytes) -> bytes:
    """Bare LFs become CRLF (a message handed over from a Unix file rather than SMTP)."""
    if b"\n" in message and message.count(b"\n") != message.count(b"\r\n"):
        return re.sub(rb"(?<!\r)\n", b"\r\n", message)
    return message


def simple_body(body: bytes) -> bytes:
    """RFC 6376 3.4.3: trailing empty lines go, an empty body is one CRLF."""
    end = len(body)
    while body.endswith(CRLF, 0, end):
        end -= 2
    return body[:end] + CRLF if end else CRLF


def canonical_header(name: bytes, value: bytes, relaxed: bool) -> bytes:
    """One field in the header canonical form (3.4.1 simple, 3.4.2 relaxed), with CRLF."""
    return relaxed_header(name, value) if relaxed else name + b":" + value + CRLF


def select_fields(fields: Sequence[tuple[bytes, bytes]], names: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """RFC 6376 5.4.2: for each name of h=, the next instance from the bottom; a name listed more
    often than present selects nothing (over-signing)."""
    by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for field in fields:
        by_name.setdefault(field[0].strip(b" \t").lower(), []).append(field)
    chosen: list[tuple[bytes, bytes]] = []
    for name in names:
        instances = by_name.get(name.strip().lower().encode("ascii", "replace"))
        if instances:
            chosen.append(instances.pop())
    return chosen


# (body canonicalization "simple"/"relaxed", l= or None)
HashKey = tuple[str, int | None]


@dataclass(frozen=True, slots=True)
class BodyDigest:
    """One canonical body's hash (of its first l= octets when l= was given) and its length."""

    digest: bytes
    length: int  # octets of the whole canonical body; -1 when not counted (relaxed without l=)


def signature_fields(fields: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The DKIM-Signature fields a verifier checks: the first MAX_SIGNATURES, top-down."""
    return [f for f in fields if f[0].strip(b" \t").lower() == b"dkim-signature"][:MAX_SIGNATURES]


def body_keys(fields: Sequence[tuple[bytes, bytes]]) -> set[HashKey]:
    """The (body canonicalization, l=) pairs the signatures need hashed. A signature whose tags
    do not parse needs none: its verdict does not depend on the body."""
    keys: set[HashKey] = set()
    for _name, value in signature_fields(fields):
        try:
            tags = parse_tag_list(value.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        canon = tags.get("c", "simple/simple").lower().partition("/")[2] or "simple"
        length = tags.get("l")
        if canon not in ("simple", "relaxed"):
            continue
        if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 76):
            continue
        keys.add((canon, int(length) if length is not None else None))
    return keys


def body_digest(body: bytes, key: HashKey) -> BodyDigest:
    """The digest `key` asks for, of a body held in memory."""
    canon, length = key
    canonical = relaxed_body(body) if canon == "relaxed" else simple_body(body)
    signed = canonical if length is None else canonical[:length]
    return BodyDigest(hashlib.sha256(signed).digest(), len(canonical))


async def verify_dkim(message: bytes, resolver: Resolver, now: int) -> tuple[DkimVerdict, ...]:
    """Verdicts of every DKIM-Signature (top-down); `(DkimVerdict(NONE),)` when there is none.
    `now` is the current Unix time, for x= (injected so that tests are deterministic)."""
    head, body = split_message(normalize_line_ends(message))
    fields = split_fields(head)
    digests = {key: body_digest(body, key) for key in body_keys(fields)}
    return await verify_fields(fields, digests, resolver, now)


async def verify_fields(fields: Sequence[tuple[bytes, bytes]], digests: Mapping[HashKey, BodyDigest],
                        resolver: Resolver, now: int) -> tuple[DkimVerdict, ...]:
    """The verdicts for a message given as its header fields and the body digests its
    signatures need (`body_keys`): from a body in memory (`verify_dkim`) or hashed while it
    streamed past (message.dkim_stream). The key look-ups of all signatures run at once."""
    signatures = signature_fields(fields)
    if not signatures:
        return (DkimVerdict(DkimResult.NONE, reason="no DKIM-Signature"),)
    return tuple(await asyncio.gather(*(
        _verify_one(field, fields, digests, resolver, now) for field in signatures)))

async def _verify_one(signature_field: tuple[bytes, bytes], fields: Sequence[tuple[bytes, bytes]],
                      digests: Mapping[HashKey, BodyDigest], resolver: Resolver,
                      now: int) -> DkimVerdict:
    try:
        tags = parse_tag_list(signature_field[1].decode("utf-8", errors="replace"))
    except ValueError as exc:
        return DkimVerdict(DkimResult.NEUTRAL, reason=f"malformed signature: {exc}")
    domain = tags.get("d", "").lower().rstrip(".")
    base = DkimVerdict(DkimResult.NEUTRAL, domain, tags.get("s", ""), tags.get("a", "").lower(),
                       tags.get("i", ""), _FWS.sub("", tags.get("b", "")))
    try:
        return await _check(tags, base, _Signed(signature_field, fields, digests), resolver, now)
    except _Unusable as exc:
        return _with(base, exc.result, exc.reason)


def _with(base: DkimVerdict, result: DkimResult, reason: str, partial: bool = False) -> DkimVerdict:
    return DkimVerdict(result, base.domain, base.selector, base.algorithm, base.identity,
                       base.signature, reason, partial)


@dataclass(frozen=True, slots=True)
class _Signed:
    """What one signature covers: its own field, the message's fields and the body digests."""

    signature_field: tuple[bytes, bytes]
    fields: Sequence[tuple[bytes, bytes]]
    digests: Mapping[HashKey, BodyDigest]


async def _check(tags: dict[str, str], base: DkimVerdict, signed: _Signed, resolver: Resolver,
                 now: int) -> DkimVerdict:
    """dkim_verify._check, step for step (its module docstring numbers them), with step 4
    reading the streamed digest."""
    field_name, raw = signed.signature_field
    fields, digests = signed.fields, signed.digests
    missing = [t for t in ("v", "a", "b", "bh", "d", "h", "s") if not tags.get(t)]
    if missing:
        raise _Unusable(DkimResult.NEUTRAL, f"missing tag(s) {', '.join(missing)} (RFC 6376 3.5)")
    if tags["v"] != "1":
        raise _Unusable(DkimResult.NEUTRAL, f"unsupported version v={tags['v']}")
    signed_names = [n.strip() for n in _FWS.sub("", tags["h"]).split(":")]
    if "from" not in (n.lower() for n in signed_names):
        raise _Unusable(DkimResult.NEUTRAL, "h= does not sign From (RFC 6376 5.4)")
    if base.identity:
        auid_domain = base.identity.rpartition("@")[2].lower().rstrip(".")
        if auid_domain != base.domain and not auid_domain.endswith("." + base.domain):
            raise _Unusable(DkimResult.NEUTRAL, "i= is not within d= (RFC 6376 3.5)")
    header_canon, _, body_canon = tags.get("c", "simple/simple").lower().partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise _Unusable(DkimResult.NEUTRAL, f"unknown canonicalization c={tags.get('c')}")
    try:
        signature = base64.b64decode(base.signature, validate=True)
        expected_bh = base64.b64decode(_FWS.sub("", tags["bh"]), validate=True)
    except (binascii.Error, ValueError):
        raise _Unusable(DkimResult.NEUTRAL, "b= or bh= is not base64") from None
    length = _number(tags, "l")
    timestamp, expiry = _number(tags, "t"), _number(tags, "x")
    if expiry is not None and timestamp is not None and expiry < timestamp:
        raise _Unusable(DkimResult.NEUTRAL, "x= is before t= (RFC 6376 3.5)")
    algorithm = base.algorithm
    if algorithm == "rsa-sha1":
        raise _Unusable(DkimResult.FAIL, "rsa-sha1 is not accepted (RFC 8301 3.1)")
    if algorithm not in ("rsa-sha256", "ed25519-sha256"):
        raise _Unusable(DkimResult.PERMERROR, f"unsupported algorithm a={algorithm}")
    if expiry is not None and expiry < now:
        raise _Unusable(DkimResult.FAIL, "signature expired (RFC 6376 3.5 x=)")

    key = await _fetch_key(resolver, base, algorithm)

    digest = digests.get((body_canon, length))
    if digest is None:  # cannot happen for a message fed through StreamedMessage
        raise _Unusable(DkimResult.TEMPERROR, "body not hashed for this signature")
    partial = False
    if length is not None:
        if length > digest.length:
            raise _Unusable(DkimResult.PERMERROR, "l= is longer than the body (RFC 6376 6.1.3)")
        partial = length < digest.length
    if digest.digest != expected_bh:
        return _with(base, DkimResult.FAIL, "body hash mismatch")

    relaxed = header_canon == "relaxed"
    data = b"".join(canonical_header(n, v, relaxed) for n, v in select_fields(fields, signed_names))
    emptied = _B_TAG.sub(lambda m: m.group(1) + m.group(2), raw, count=1)
    data += canonical_header(field_name, emptied, relaxed)[:-2]
    if not _signature_valid(key, signature, data):
        return _with(base, DkimResult.FAIL, "signature does not verify")
    reason = "good signature"
    if partial:
        reason += f"; l={length} leaves part of the body unsigned"
    return _with(base, DkimResult.PASS, reason, partial)


def _number(tags: dict[str, str], name: str) -> int | None:
    """A numeric tag (l=, t=, x=: 1*76DIGIT, RFC 6376 3.5)."""
    value = tags.get(name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or len(value) > 76:
        raise _Unusable(DkimResult.NEUTRAL, f"{name}= is not a number")
    return int(value)


PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


async def _fetch_key(resolver: Resolver, base: DkimVerdict, algorithm: str) -> PublicKey:
    """RFC 6376 3.6.2 and 6.1.2: the key record at <s>._domainkey.<d>, checked and loaded."""
    name = f"{base.selector}._domainkey.{base.domain}"
    try:
        records = await resolver.txt(name)
    except (DnsNxDomain, DnsNoData):
        raise _Unusable(DkimResult.PERMERROR, f"no key at {name}") from None
    except DnsError as exc:
        raise _Unusable(DkimResult.TEMPERROR, f"key look-up failed: {exc}") from None
    if len(records) != 1:
        raise _Unusable(DkimResult.PERMERROR, f"{len(records)} key records at {name}")
    return load_key_record(records[0].joined.decode("ascii", errors="replace"), algorithm, base.identity,
                           base.domain)


def load_key_record(text: str, algorithm: str, identity: str = "", domain: str = "") -> PublicKey:
    """RFC 6376 3.6.1: a key record's public key for `algorithm`; raises `_Unusable`."""
    try:
        tags = parse_tag_list(text)
    except ValueError as exc:
        raise _Unusable(DkimResult.PERMERROR, f"malformed key record: {exc}") from None
    if tags.get("v", "DKIM1") != "DKIM1":
        raise _Unusable(DkimResult.PERMERROR, "key record v= is not DKIM1")
    key_type = tags.get("k", "rsa").lower()
    if key_type != algorithm.partition("-")[0]:
        raise _Unusable(DkimResult.PERMERROR, f"key type k={key_type} does not match a={algorithm}")
    if "h" in tags and "sha256" not in [h.strip().lower() for h in tags["h"].split(":")]:
        raise _Unusable(DkimResult.PERMERROR, "key record h= excludes sha256")
    if "s" in tags and not {"*", "email"} & {s.strip().lower() for s in tags["s"].split(":")}:
        raise _Unusable(DkimResult.PERMERROR, "key record is not for email (s=)")
    flags = {f.strip().lower() for f in tags.get("t", "").split(":")}
    if "s" in flags and identity and identity.rpartition("@")[2].lower().rstrip(".") != domain:
        raise _Unusable(DkimResult.PERMERROR, "t=s key, but i= is a subdomain of d=")
    p = _FWS.sub("", tags.get("p", ""))
    if not p:
        raise _Unusable(DkimResult.PERMERROR, "key revoked (empty p=)")
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise _Unusable(DkimResult.PERMERROR, "p= is not base64") from None
    if key_type == "ed25519":
        if len(der) != ED25519_KEY_LENGTH:
            raise _Unusable(DkimResult.PERMERROR, "Ed25519 key is not 32 octets (RFC 8463 4)")
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:  # some publish a bare RSAPublicKey (PKCS#1) rather than SubjectPublicKeyInfo
            key = serialization.load_der_public_key(_pkcs1_to_spki(der))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise _Unusable(DkimResult.PERMERROR, "p= is not a public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Unusable(DkimResult.PERMERROR, "p= is not an RSA key")
    if key.key_size < RSA_MIN_BITS:
        raise _Unusable(DkimResult.FAIL, f"RSA key of {key.key_size} bits (RFC 8301 3.2: >= 1024)")
    return key


def _pkcs1_to_spki(der: bytes) -> bytes:
    """Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo with the rsaEncryption OID."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(der) + 1) + b"\x00" + der
    inner = algorithm + bit_string
    return b"\x30" + _der_length(len(inner)) + inner


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _signature_valid(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            # RFC 8463 3: Ed25519 signs the SHA-256 hash of the canonical data.
            key.verify(signature, hashlib.sha256(data).digest())
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = [
    "MAX_SIGNATURES",
    "RSA_MIN_BITS",
    "DkimResult",
    "DkimVerdict",
    "canonical_header",
    "load_key_record",
    "normalize_line_ends",
    "parse_tag_list",
    "select_fields",
    "simple_body",
    "verify_dkim",
]
