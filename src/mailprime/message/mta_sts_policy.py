"""MTA-STS policies as text (RFC 8461 3.1, 3.2, 4.1): the `_mta-sts` TXT record, the policy file
and MX patterns. Pure: no I/O. Delivery (delivery.mta_sts) applies policies; `mailprime doctor`
checks what a domain publishes; both read them with this one parser.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: max_age is at most one year of seconds
MAX_POLICY_SIZE = 64 * 1024  # our cap on the policy body (RFC 8461 3.3 leaves it to senders)
FETCH_TIMEOUT = 60.0  # RFC 8461 3.3: "a timeout of 60 seconds is recommended" (RFC uses "SHOULD")
MAX_ID_LENGTH = 32  # RFC 8461 3.1: sts-id = 1*32(ALPHA / DIGIT)
MAX_MX_PATTERNS = 100  # our cap: a policy listing more is cut here
POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 3.2

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class StsMode(enum.StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(ValueError):
    """A TXT record or policy that does not parse (RFC 8461 3.1 / 3.2)."""


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy (RFC 8461 3.2)."""

    mode: StsMode
    mx: tuple[str, ...]  # lower-case patterns, "*." allowed as the whole first label
    max_age: int  # seconds, 0..MAX_AGE_LIMIT

    def matches(self, host: str) -> bool:
        return any(mx_pattern_matches(pattern, host) for pattern in self.mx)


def parse_txt_records(records: Sequence[str]) -> str:
    """The policy id of a domain's `_mta-sts` TXT records (RFC 8461 3.1): records not starting
    with "v=STSv1;" are discarded; exactly one must remain and parse. Raises PolicyError."""
    candidates = [r for r in records if r.startswith("v=STSv1;")]
    if len(candidates) != 1:
        raise PolicyError(f"{len(candidates)} TXT records start with v=STSv1; (need exactly one)")
    policy_id = ""
    for raw in candidates[0].split(";")[1:]:
        field = raw.strip(" \t")
        if not field:
            continue  # the trailing field-delim is allowed
        name, sep, value = field.partition("=")
        if not sep:
            raise PolicyError(f"TXT field without '=': {field!r}")
        if name == "id":
            if not _ID.fullmatch(value):
                raise PolicyError(f"invalid id {value[:40]!r} (1-32 letters and digits)")
            policy_id = policy_id or value  # the first id wins; a record should have one
        elif not (_EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            raise PolicyError(f"invalid TXT extension field {field[:40]!r}")
    if not policy_id:
        raise PolicyError("TXT record has no id field")
    return policy_id


def parse_policy(text: str) -> StsPolicy:
    """Parses a policy body (RFC 8461 3.2): "key: value" lines separated by LF or CRLF. Required:
    version STSv1, mode, max_age; at least one mx unless mode is none. Unknown keys are ignored
    (3.2: extensions); a repeated key other than mx keeps its first value. Raises PolicyError."""
    if len(text.encode("utf-8", errors="replace")) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} octets")
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r").strip(" \t")
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(" \t").lower(), value.strip(" \t")
        if not sep or not key:
            raise PolicyError(f"line without 'key: value': {line[:60]!r}")
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not _valid_pattern(pattern):
                raise PolicyError(f"invalid mx pattern {value[:80]!r}")
            if len(mx) < MAX_MX_PATTERNS and pattern not in mx:
                mx.append(pattern)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version must be STSv1, got {fields.get('version', '(none)')!r}")
    try:
        mode = StsMode(fields.get("mode", "").lower())
    except ValueError:
        raise PolicyError(f"mode must be enforce, testing or none, got "
                          f"{fields.get('mode', '(none)')[:20]!r}") from None
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10):
        raise PolicyError(f"max_age must be 1 to 10 digits, got {age[:20]!r}")
    if mode is not StsMode.NONE and not mx:
        raise PolicyError(f"mode {mode} needs at least one mx pattern")
    # Larger than the RFC's maximum: cap rather than refuse (robustness; the RFC only bounds it).
    return StsPolicy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT))


def _valid_pattern(pattern: str) -> bool:
    host = pattern.removeprefix("*.")
    labels = host.split(".")
    return len(host) <= 253 and len(labels) >= 1 and all(_LABEL.fullmatch(lb) for lb in labels)


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: a pattern is a host name, or "*." and a domain that matches one label more
    than the domain: "*.example.com" matches "mx.example.com", not "example.com" nor
    "a.b.example.com". Comparison is case-insensitive, ignoring a trailing dot."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern
