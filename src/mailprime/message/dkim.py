"""DKIM signing (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463), and the key records.

Pure: stdlib and `cryptography` (OpenSSL) only. No verification here: the tests check what we
sign with independent verifiers (dkimpy and OpenDKIM).

Signing one message: the body hash `bh=` comes from message.dkim_canon (streamed, so a spooled
body never needs to be in memory); the header hash covers the fields named in `h=` (relaxed
form, each name taken from the bottom up, RFC 6376 5.4.2) and then the DKIM-Signature field
itself with an empty `b=` and no final CRLF (3.7). RSA signs that SHA-256 hash with PKCS#1 v1.5
(RFC 8017 8.2); Ed25519 signs the 32-octet SHA-256 hash itself (RFC 8463 3: "the SHA-256 hash
of the canonicalized data is the input to Ed25519", pure Ed25519 of RFC 8032). Every key of the
domain signs the same fields, so one message gets an RSA and an Ed25519 signature; both fields
are prepended, RSA first, for verifiers that look at the first signature only.
"""

from __future__ import annotations

import base64
import binascii  # base64.b64encode without its Python wrapper, on the signing path
import enum
import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from mailprime.message.dkim_canon import (
    CRLF,
    body_hash,
    relaxed_header,
    relaxed_value,
    split_fields,
    split_message,
)

_SignedHeaderC = Callable[[bytes, tuple[bytes, ...]], tuple[tuple[int, ...], bytes, bytes | None]]
_SigningInputC = Callable[[bytes, tuple[bytes, ...]],
                          tuple[tuple[int, ...], bytes, bytes | None, bytes]]
_signed_header_c: _SignedHeaderC | None
_signing_input_c: _SigningInputC | None
_sha256_of: Callable[..., bytes]
_fill_c: Callable[[tuple[bytes, bytes, bytes, bytes, bytes, bytes], bytes, bytes, bytes],
                  tuple[bytes, bytes]] | None
_b_value_c: Callable[[bytes], bytes] | None
try:  # the C helper (message/_relaxed.c; optional, see dkim_canon)
    from mailprime.message._relaxed import b_value as _b_value_c
    from mailprime.message._relaxed import fill as _fill_c
    from mailprime.message._relaxed import sha256_of as _sha256_of
    from mailprime.message._relaxed import signed_header as _signed_header_c
    from mailprime.message._relaxed import signing_input as _signing_input_c
except ImportError:  # pragma: no cover - only where it could not be built
    _signed_header_c = None
    _signing_input_c = None
    _fill_c = None
    _b_value_c = None

    def _sha256_of(*parts: bytes) -> bytes:
        return hashlib.sha256(b"".join(parts)).digest()

# RFC 6376 3.5 recommends folding; RFC 5322 2.1.1: lines SHOULD be at most 78 characters.
FOLD_WIDTH = 78
# RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD use 2048.
RSA_BITS = 2048
RSA_MIN_BITS = 1024
# RFC 1035 3.3.14 / RFC 7208 3.3: a TXT record is a sequence of character-strings of at most
# 255 octets each; verifiers concatenate them (RFC 6376 3.6.2.2).
TXT_STRING_MAX = 255
# RFC 6376 3.1: a selector is one or more dot-separated DNS labels (RFC 1035 2.3.4: 63 octets).
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")

# The fields we sign when present (RFC 6376 5.4.1 "SHOULD be included"; the List-Unsubscribe pair
# because RFC 8058 4 requires it covered by a DKIM signature; Feedback-ID for Gmail's loop).
SIGNED_FIELDS: tuple[str, ...] = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    "list-unsubscribe", "list-unsubscribe-post", "feedback-id",
)
# Listed once more than present (RFC 6376 5.4 and 8.15): nobody can add another without
# breaking the signature. From decides DMARC alignment; a second From is the classic attack.
OVERSIGNED_FIELDS: frozenset[str] = frozenset({"from"})


class DkimAlgorithm(enum.StrEnum):
    """RFC 6376 3.3 / RFC 8463 3: the a= tag; `key_type` is the k= of the key record."""

    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"

    @property
    def key_type(self) -> str:
        return "rsa" if self is DkimAlgorithm.RSA_SHA256 else "ed25519"

    @classmethod
    def from_key_type(cls, key_type: str) -> DkimAlgorithm:
        """"rsa" or "ed25519" (case-insensitive, as the CLI takes it); ValueError otherwise."""
        for algorithm in cls:
            if algorithm.key_type == key_type.lower() or algorithm.value == key_type.lower():
                return algorithm
        raise ValueError(f"unknown DKIM key type {key_type!r} (rsa or ed25519)")


PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Stateless parameter objects, made once instead of per signature.
_PKCS1V15 = padding.PKCS1v15()
_PREHASHED_SHA256 = utils.Prehashed(hashes.SHA256())


class DkimKeyError(ValueError):
    """A private key that cannot sign: not PEM, another key type, or an RSA key too short."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key ready to sign as `domain` with `selector` (d= and s=)."""

    domain: str
    selector: str
    key: PrivateKey
    # The a= the key signs with, found once: isinstance against cryptography's key classes (ABCs)
    # runs ABCMeta.__instancecheck__ in Python, a cost paid several times per message otherwise.
    algorithm: DkimAlgorithm = field(init=False, repr=False, compare=False)
    # The key's DKIM-Signature templates by (h= names, t= digits): see `unsigned_fields`.
    templates: dict[tuple[tuple[str, ...], int], FieldTemplate] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    # `sign_digest`: the key's own sign method, bound once with what it needs.
    sign_digest: Callable[[bytes], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ed = isinstance(self.key, ed25519.Ed25519PrivateKey)
        object.__setattr__(self, "algorithm",
                           DkimAlgorithm.ED25519_SHA256 if ed else DkimAlgorithm.RSA_SHA256)
        if ed:
            sign = cast(ed25519.Ed25519PrivateKey, self.key).sign
        else:
            sign = functools.partial(cast(rsa.RSAPrivateKey, self.key).sign,
                                     padding=_PKCS1V15, algorithm=_PREHASHED_SHA256)
        # The b= octets for the SHA-256 digest of the canonicalized header data.
        object.__setattr__(self, "sign_digest", sign)


# Keys and their DNS records -----------------------------------------------------------------

def is_valid_selector(selector: str) -> bool:
    return len(selector) <= 253 and bool(_SELECTOR.match(selector))


def generate_private_key(algorithm: DkimAlgorithm) -> str:
    """A new private key as PKCS#8 PEM: RSA-2048 (RFC 8301 3.2) or Ed25519 (RFC 8463)."""
    key: PrivateKey
    if algorithm is DkimAlgorithm.ED25519_SHA256:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def load_private_key(pem: str) -> PrivateKey:
    """Parses a PEM private key (PKCS#8 or PKCS#1); DkimKeyError if it cannot sign DKIM."""
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise DkimKeyError(f"not a usable PEM private key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise DkimKeyError(f"RSA key of {key.key_size} bits: RFC 8301 requires at least "
                               f"{RSA_MIN_BITS}")
        return key
    raise DkimKeyError(f"{type(key).__name__}: DKIM signs with RSA or Ed25519 keys only")


def public_key_record(key: PrivateKey) -> str:
    """The TXT record of the key (RFC 6376 3.6.1): "v=DKIM1; k=rsa; p=<DER SubjectPublicKeyInfo>"
    or "v=DKIM1; k=ed25519; p=<the 32 raw octets>" (RFC 8463 4)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def txt_strings(record: str) -> list[str]:
    """The record cut into character-strings of at most 255 octets (RFC 1035 3.3.14)."""
    return [record[i:i + TXT_STRING_MAX] for i in range(0, len(record), TXT_STRING_MAX)] or [""]


def record_name(domain: str, selector: str) -> str:
    """Where the key record lives (RFC 6376 3.6.2.1): <selector>._domainkey.<domain>."""
    return f"{selector}._domainkey.{domain}"


def zone_line(domain: str, selector: str, record: str) -> str:
    """One zone-file line publishing `record`, its strings quoted (the record holds no quote
    or backslash: base64 and the tag letters only)."""
    quoted = " ".join(f'"{s}"' for s in txt_strings(record))
    return f"{record_name(domain, selector)}. IN TXT {quoted}"


# Choosing what to sign ------------------------------------------------------------------------

_ANGLE_ADDR = re.compile(rb"<\s*([^<>\s]*)\s*>")


def _domain_of(addr_spec: bytes) -> str | None:
    local, at, domain = addr_spec.rpartition(b"@")
    domain = domain.strip().rstrip(b".").lower()
    if not at or not local or not domain or b" " in domain:
        return None
    if domain.isascii() and len(domain) < 64 and not domain.startswith(b".") and b".." not in domain:
        # What the IDNA codec returns for it (ASCII labels of 1 to 63 octets pass unchanged),
        # without the codec's cost on every message signed.
        return domain.decode("ascii")
    try:
        # An SMTPUTF8 message may carry U-labels; keys are stored under A-labels (IDNA), as
        # domain.address.normalize_domain writes them.
        return domain.decode("utf-8").encode("idna").decode("ascii")
    except UnicodeError:
        return None


def from_domain(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The domain of the RFC5322.From author (the first mailbox of the first From field), lower
    case, as DMARC aligns on it; None when there is no From or no domain in it."""
    return from_value_domain(_first_from(fields))


def _first_from(fields: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The raw value of the first From field, or None."""
    return next((v for n, v in fields if n.strip(b" \t").lower() == b"from"), None)


@functools.lru_cache(maxsize=1024)
def from_value_domain(value: bytes | None) -> str | None:
    """`from_domain` of the raw value of the first From field (None: there is none). A pure
    function of the value, and a campaign's messages all carry the same From: cached."""
    if value is None:
        return None
    unfolded = value.replace(CRLF, b" ")
    found = _ANGLE_ADDR.search(unfolded)
    if found is not None:
        return _domain_of(found.group(1))
    # A bare addr-spec, perhaps with a comment: "joe@example.com (Joe)".
    first = unfolded.split(b",", 1)[0].split(b"(", 1)[0].strip()
    return _domain_of(first)


_SIGNED_BYTES = frozenset(name.encode("ascii") for name in SIGNED_FIELDS)
# SIGNED_FIELDS as (name, its bytes, oversigned), for the one loop of `_names_and_data`.
_SIGNED_ORDER = tuple((name, name.encode("ascii"), name in OVERSIGNED_FIELDS)
                      for name in SIGNED_FIELDS)


def _signable(fields: Sequence[tuple[bytes, bytes]]) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """The fields of SIGNED_FIELDS present, by lower-case name, in message order."""
    found: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for raw, value in fields:
        key = raw.strip(b" \t").lower()
        if key in _SIGNED_BYTES:
            found.setdefault(key, []).append((raw, value))
    return found


def _names_of(present: dict[bytes, list[tuple[bytes, bytes]]]) -> list[str]:
    names: list[str] = []
    for name in SIGNED_FIELDS:
        count = len(present.get(name.encode("ascii"), ())) + (name in OVERSIGNED_FIELDS)
        names.extend([name] * count)
    return names


def _data_of(present: dict[bytes, list[tuple[bytes, bytes]]], names: Sequence[str]) -> bytes:
    remaining = {name: list(instances) for name, instances in present.items()}
    out: list[bytes] = []
    for name in names:
        instances = remaining.get(name.encode("ascii").lower())
        if instances:
            out.append(relaxed_header(*instances.pop()))
    return b"".join(out)


def _names_and_data(present: dict[bytes, list[tuple[bytes, bytes]]]) -> tuple[list[str], bytes]:
    """`_names_of` and `_data_of` in one pass: with h= in SIGNED_FIELDS order, each name's
    instances are taken bottom up and the oversigned extra contributes nothing (5.4.2), so the
    data is every present instance, name by name, last instance first."""
    names: list[str] = []
    keys: list[bytes] = []
    values: list[bytes] = []
    for name, key, oversigned in _SIGNED_ORDER:
        instances = present.get(key)
        if instances:
            for _, value in reversed(instances):
                names.append(name)
                keys.append(key)  # the raw name stripped and lower-cased: its relaxed form
                values.append(value)
        if oversigned:
            names.append(name)
    # One look at all the values at once instead of four per field: with no CR, LF, VT or FF
    # anywhere (no folded field, nothing odd), SP and HTAB are all the whitespace split() sees,
    # and each relaxed value is its tokens joined by one SP (what relaxed_value does then too).
    every = b"".join(values)
    if b"\r" in every or b"\n" in every or b"\x0b" in every or b"\x0c" in every:
        relaxed = [relaxed_value(v) for v in values]
    else:
        relaxed = [b" ".join(v.split()) for v in values]
    return names, b"".join([k + b":" + v + CRLF for k, v in zip(keys, relaxed, strict=True)])


class SignableHeader(NamedTuple):
    """What a signature needs of a header section: the h= names (SIGNED_FIELDS as often as
    present, From once more), the relaxed data they sign, and the raw first From value. (A
    NamedTuple rather than a frozen dataclass: made once per message signed, and a tuple is
    made in a fraction of the time.)"""

    names: tuple[str, ...]
    data: bytes
    from_value: bytes | None


_SIGNED_KEYS = tuple(key for _name, key, _over in _SIGNED_ORDER)


def signable_header(section: bytes) -> SignableHeader:
    """The SignableHeader of a header section (CRLF-terminated fields): in one C call
    (message/_relaxed.c `signed_header`) when the helper is built, else `signable_header_py`,
    which it is held to byte for byte (tests/message/test_dkim_relaxed_c.py)."""
    if _signed_header_c is None:
        return signable_header_py(section)
    counts, data, from_value = _signed_header_c(section, _SIGNED_KEYS)
    return SignableHeader(_names_for(counts), data, from_value)


def signable_header_py(section: bytes) -> SignableHeader:
    return _signable_of(split_fields(section))


def _signable_of(fields: Sequence[tuple[bytes, bytes]]) -> SignableHeader:
    names, data = _names_and_data(_signable(fields))
    return SignableHeader(tuple(names), data, _first_from(fields))


@functools.lru_cache(maxsize=256)
def _names_for(counts: tuple[int, ...]) -> tuple[str, ...]:
    """The h= names for the instance counts of SIGNED_FIELDS (what `_names_and_data` lists):
    mail from one sender repeats the same few counts, so cached."""
    names: list[str] = []
    for (name, _key, oversigned), count in zip(_SIGNED_ORDER, counts, strict=True):
        names.extend([name] * (count + oversigned))
    return tuple(names)


def signed_field_names(fields: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The h= list: each field of SIGNED_FIELDS as often as present (From once more), in the
    order of SIGNED_FIELDS."""
    return _names_of(_signable(fields))


def signed_header_data(fields: Sequence[tuple[bytes, bytes]], names: Sequence[str]) -> bytes:
    """The relaxed fields h= names, in h= order, each instance taken from the bottom up; a name
    listed more often than present contributes nothing the extra times (RFC 6376 5.4.2)."""
    by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for raw, value in fields:
        by_name.setdefault(raw.strip(b" \t").lower(), []).append((raw, value))
    return _data_of(by_name, names)


# The DKIM-Signature field ------------------------------------------------------------------

def _fold_tags(tags: Sequence[str], lines: list[str]) -> list[str]:
    """Lays "tag=value;" items out after `lines` (extended in place and returned) on lines of
    at most FOLD_WIDTH characters (continuation lines start with a tab). An h= list too long for
    a line of its own breaks after a colon, where RFC 6376 3.5 allows FWS."""
    for tag in tags:
        if len(lines[-1]) + 1 + len(tag) <= FOLD_WIDTH:
            lines[-1] += " " + tag
        elif len(tag) + 1 <= FOLD_WIDTH or not tag.startswith("h="):
            lines.append("\t" + tag)
        else:
            lines += _fold_long_h(tag)
    return lines


@functools.lru_cache(maxsize=256)
def _fold_long_h(tag: str) -> tuple[str, ...]:
    """An h= tag too long for a line, broken after colons onto lines of its own. It does not
    depend on what precedes it, and mail from one sender repeats the same few h= lists: cached."""
    names = tag.split(":")
    lines: list[str] = []
    line = "\t"
    for i, name in enumerate(names):
        piece = name if i == len(names) - 1 else name + ":"
        if len(line) + len(piece) > FOLD_WIDTH and line != "\t":
            lines.append(line)
            line = "\t"
        line += piece
    lines.append(line)
    return tuple(lines)


@functools.lru_cache(maxsize=1024)
def _key_lines(algorithm: DkimAlgorithm, domain: str, selector: str) -> tuple[str, ...]:
    """The folded lines of the tags that are the same in every signature of one key: folding
    is greedy left to right, so the per-message tags simply continue from these."""
    tags = ("v=1;", f"a={algorithm.value};", "c=relaxed/relaxed;", f"d={domain};",
            f"s={selector};")
    return tuple(_fold_tags(tags, ["DKIM-Signature:"]))


def unsigned_field(key: SigningKey, names: Sequence[str], bh: bytes, timestamp: int) -> str:
    """The folded DKIM-Signature field up to and including an empty "b=" (no CRLF at the end):
    what the header hash covers, and what the signature value is appended to."""
    return _fold_unsigned(key, names, str(timestamp),
                          binascii.b2a_base64(bh, newline=False).decode("ascii"))


def _fold_unsigned(key: SigningKey, names: Sequence[str], t: str, bh64: str) -> str:
    tags = (f"t={t};", f"h={':'.join(names)};", f"bh={bh64};")
    lines = _fold_tags(tags, list(_key_lines(key.algorithm, key.domain, key.selector)))
    # b= starts a line of its own so that its value can take the rest of the width.
    lines.append("\tb=")
    return "\r\n".join(lines)


def _fold_b(signature: str, unsigned: str) -> str:
    """The signature value appended to "...\\tb=", folded at FOLD_WIDTH columns: FWS inside b=
    is allowed (RFC 6376 3.5 base64string) and ignored, since verifiers drop the whole value."""
    first = FOLD_WIDTH - len(unsigned.rsplit("\r\n", 1)[-1])
    chunks = [signature[:first]]
    rest = signature[first:]
    width = FOLD_WIDTH - 1
    chunks.extend(rest[i:i + width] for i in range(0, len(rest), width))
    return unsigned + "\r\n\t".join(chunks) + "\r\n"


def field_digest(header_data: bytes, unsigned: str) -> bytes:
    """What the b= of `unsigned` (ending in "b=") signs: SHA-256 of `header_data` (the relaxed
    fields h= names) followed by the relaxed `unsigned` field without its CRLF (RFC 6376 3.7)."""
    name, _, value = unsigned.partition(":")
    own = relaxed_header(name.encode("ascii"), value.encode("ascii"))[:-2]
    digest = hashlib.sha256(header_data)
    digest.update(own)  # rather than hashing header_data + own, a copy of both
    return digest.digest()


def signed_field(key: SigningKey, digest: bytes, unsigned: str) -> str:
    """The complete DKIM-Signature field (CRLF-terminated): `unsigned` with the signature of
    `digest` (field_digest) as its b= value. The private-key operation is all it does besides
    folding, and `cryptography` releases the GIL for it: worker threads may sign in parallel."""
    b = binascii.b2a_base64(key.sign_digest(digest), newline=False).decode("ascii")
    return _fold_b(b, unsigned)


def sign_field(key: SigningKey, header_data: bytes, unsigned: str) -> str:
    """The complete DKIM-Signature field (CRLF-terminated) over `header_data`."""
    return signed_field(key, field_digest(header_data, unsigned), unsigned)


# The signing path: per-message work on templates ---------------------------------------------
#
# Between two messages of one sender only t= and bh= change in the DKIM-Signature field, and
# neither changes its length (t= has ten digits from 2001 to 2286; bh= is always 44 base64
# characters). Greedy folding depends on lengths only, so the folded field of a key and an h=
# list is a template with two holes, made once by `unsigned_field` itself; so is its relaxed
# form, which the header hash covers (the holes hold no whitespace, so relaxing around them
# changes nothing in them). tests/message/test_dkim_fast_paths.py holds the two paths to the
# same octets.

_T_HOLE = "\0"  # octets no domain, selector or tag value holds: where t= and bh= go
_BH_HOLE = "\1" * 44


# The folded field cut at the holes (before t=, between, after bh=), then its relaxed form
# (without the final CRLF) cut the same way.
FieldTemplate = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
_TEMPLATES_PER_KEY = 256  # h= lists seen per key before its templates are dropped and remade


def _cut(text: bytes, t_digits: int) -> tuple[bytes, bytes, bytes]:
    before_t, rest = text.split(_T_HOLE.encode() * t_digits, 1)
    between, after_bh = rest.split(_BH_HOLE.encode(), 1)
    return before_t, between, after_bh


def _field_template(key: SigningKey, names: tuple[str, ...], t_digits: int) -> FieldTemplate:
    unsigned = _fold_unsigned(key, names, _T_HOLE * t_digits, _BH_HOLE)
    name, _, value = unsigned.partition(":")
    relaxed = relaxed_header(name.encode("ascii"), value.encode("ascii"))[:-2]
    template = (*_cut(unsigned.encode("ascii"), t_digits), *_cut(relaxed, t_digits))
    if len(key.templates) >= _TEMPLATES_PER_KEY:
        key.templates.clear()
    key.templates[names, t_digits] = template
    return template


Pending = tuple[SigningKey, bytes, bytes]  # a key, its unsigned field, the digest it signs


def unsigned_fields(header: SignableHeader, bh: bytes, keys: Sequence[SigningKey],
                    timestamp: int) -> list[Pending]:
    """The signatures up to the private-key operations: per key (RSA before Ed25519), its
    unsigned field and the digest to sign, for `finish_signatures` to finish (perhaps on
    another thread), over a message whose header is `header` and whose relaxed body hashes
    to `bh`. Made from the key's template (see above): what `unsigned_field` and
    `field_digest` give, without folding or canonicalizing anything per message."""
    t = b"%d" % timestamp
    bh64 = binascii.b2a_base64(bh, newline=False)
    names, data, _ = header
    return [(key, *_filled(key, names, data, t, bh64)) for key in _rsa_first(keys)]


def _rsa_first(keys: Sequence[SigningKey]) -> Sequence[SigningKey]:
    """RSA signatures go on top, for verifiers that look at the first signature only."""
    if len(keys) < 2:
        return keys
    return sorted(keys, key=lambda k: k.algorithm is not DkimAlgorithm.RSA_SHA256)


def _filled(key: SigningKey, names: tuple[str, ...], data: bytes, t: bytes,
            bh64: bytes) -> tuple[bytes, bytes]:
    """The unsigned field of `key` with t= and bh= filled in, and the digest its b= signs: the
    signed fields' `data`, then the field in relaxed form (RFC 6376 3.7)."""
    template = key.templates.get((names, len(t))) or _field_template(key, names, len(t))
    return _fill(template, data, t, bh64)


def _fill_py(template: FieldTemplate, data: bytes, t: bytes, bh64: bytes) -> tuple[bytes, bytes]:
    """`_fill` in Python (the C helper's `fill` is held to it by the tests)."""
    a, b, c, relaxed_a, relaxed_b, relaxed_c = template
    return a + t + b + bh64 + c, _sha256_of(data, relaxed_a, t, relaxed_b, bh64, relaxed_c)


# The b= value: "\tb=" starts the last line of the unsigned field (see `unsigned_field`), so
# the first FOLD_WIDTH - 3 characters of the value fit there, and FOLD_WIDTH - 1 on each
# continuation line after its tab (message/_relaxed.c's B_FIRST and B_NEXT).
_B_FIRST = FOLD_WIDTH - 3
_B_NEXT = FOLD_WIDTH - 1
_B_FOLD = b"\r\n\t"


def _b_value_py(signature: bytes) -> bytes:
    """The b= value of `signature` folded as `signed_field` folds it, with the field's CRLF
    (`_b_value` is the C helper's `b_value` when built, held to this by the tests)."""
    b = binascii.b2a_base64(signature, newline=False)
    lines = [b[:_B_FIRST]]
    lines += [b[i:i + _B_NEXT] for i in range(_B_FIRST, len(b), _B_NEXT)]
    return _B_FOLD.join(lines) + CRLF


_fill: Callable[[FieldTemplate, bytes, bytes, bytes], tuple[bytes, bytes]] = _fill_c or _fill_py
_b_value: Callable[[bytes], bytes] = _b_value_c or _b_value_py


def finish_signatures(pending: Sequence[Pending]) -> bytes:
    """The DKIM-Signature fields to put on top of the message, one per key: the private-key
    operations of `unsigned_fields`' result (`cryptography` releases the GIL for them: worker
    threads may sign in parallel). Empty if `pending` is."""
    return b"".join([unsigned + _b_value(key.sign_digest(digest))
                     for key, unsigned, digest in pending])


def sign_with(message: bytes, keys_by_domain: Mapping[str, Sequence[SigningKey]],
              timestamp: int) -> bytes:
    """`message` with a DKIM-Signature field on top per key of its From domain in
    `keys_by_domain` (lower-case A-label domains), itself when there is none: `signing_input`,
    `unsigned_fields` and `finish_signatures` in one go, for a message signed at once. One
    loop and no intermediate objects: the path runs tens of thousands of times a second."""
    names, data, from_value, bh = _signing_parts(message)
    keys = _keys_of(keys_by_domain, from_value)
    if not keys:
        return message
    t = b"%d" % timestamp
    bh64 = binascii.b2a_base64(bh, newline=False)
    out: list[bytes] = []
    for key in _rsa_first(keys):
        unsigned, digest = _filled(key, names, data, t, bh64)
        out += (unsigned, _b_value(key.sign_digest(digest)))
    out.append(message)
    return b"".join(out)


def signature_fields(fields: Sequence[tuple[bytes, bytes]], bh: bytes,
                     keys: Sequence[SigningKey], timestamp: int) -> bytes:
    """The DKIM-Signature fields for a message whose header fields are `fields` (from
    dkim_canon.split_fields) and whose relaxed body hashes to `bh`, by the Python path."""
    return finish_signatures(unsigned_fields(_signable_of(fields), bh, keys, timestamp))


def signing_input(message: bytes) -> tuple[SignableHeader, bytes]:
    """The SignableHeader of a whole message in memory and its relaxed body hash (bh=): in one
    C call (message/_relaxed.c `signing_input`: neither part is copied out of the message) when
    the helper is built, else `signing_input_py`, which it is held to by the tests."""
    names, data, from_value, bh = _signing_parts(message)
    return SignableHeader(names, data, from_value), bh


def _signing_parts(message: bytes) -> tuple[tuple[str, ...], bytes, bytes | None, bytes]:
    """`signing_input`'s four values flat (no SignableHeader made: `sign_with` needs none)."""
    if _signing_input_c is None:
        (names, data, from_value), bh = signing_input_py(message)
        return names, data, from_value, bh
    counts, data, from_value, bh = _signing_input_c(message, _SIGNED_KEYS)
    return _names_for(counts), data, from_value, bh


def _keys_of(keys_by_domain: Mapping[str, Sequence[SigningKey]],
             from_value: bytes | None) -> Sequence[SigningKey]:
    """The keys of the From domain (lower-case A-label, as `keys_by_domain` is keyed)."""
    domain = from_value_domain(from_value)
    return keys_by_domain.get(domain, ()) if domain is not None else ()


def pending_with(message: bytes, keys_by_domain: Mapping[str, Sequence[SigningKey]],
                 timestamp: int) -> list[Pending]:
    """`sign_with` up to the private-key work (`unsigned_fields`' result; empty when the From
    domain has no key), for `finish_signatures` to complete, perhaps on another thread."""
    header, bh = signing_input(message)
    keys = _keys_of(keys_by_domain, header.from_value)
    return unsigned_fields(header, bh, keys, timestamp) if keys else []


def signing_input_py(message: bytes) -> tuple[SignableHeader, bytes]:
    head, body = split_message(message)
    return signable_header_py(head), body_hash(body)


def sign_message(message: bytes, keys: Sequence[SigningKey], timestamp: int) -> bytes:
    """The DKIM-Signature fields for a whole message in memory."""
    header, bh = signing_input(message)
    return finish_signatures(unsigned_fields(header, bh, keys, timestamp))


__all__ = [
    "FOLD_WIDTH",
    "OVERSIGNED_FIELDS",
    "RSA_BITS",
    "SIGNED_FIELDS",
    "DkimAlgorithm",
    "DkimKeyError",
    "Pending",
    "PrivateKey",
    "SignableHeader",
    "SigningKey",
    "field_digest",
    "finish_signatures",
    "from_domain",
    "from_value_domain",
    "generate_private_key",
    "is_valid_selector",
    "load_private_key",
    "pending_with",
    "public_key_record",
    "record_name",
    "sign_field",
    "sign_message",
    "sign_with",
    "signable_header",
    "signable_header_py",
    "signature_fields",
    "signed_field",
    "signed_field_names",
    "signed_header_data",
    "signing_input",
    "signing_input_py",
    "split_message",
    "txt_strings",
    "unsigned_field",
    "unsigned_fields",
    "zone_line",
]
