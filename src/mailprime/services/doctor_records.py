"""The values of `mailprime doctor` and the pure text work behind its checks: reading and
composing SPF, DMARC and MTA-STS texts, zone-file lines, host-name patterns, DNSBL names.

Theory of operation. services.doctor asks DNS and judges; everything here is a function of its
arguments only (no DNS, no clock, no file), so each rule is tested byte-exact without a socket.
Fixes are composed to be pasted as printed: zone-file lines whose TXT strings are at most 255
octets (RFC 1035 3.3.14), and SPF/DMARC records that keep what the operator already published
and change only what is wrong.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.message.dkim import txt_strings
from mailprime.message.mta_sts_policy import mx_pattern_matches

# Words ISPs put in the PTR names of dynamic and unconfigured address space (the names Yahoo and
# Spamhaus' PBL treat as "generic").
_GENERIC_WORDS = re.compile(
    r"(^|[.-])((dynamic|dyn|dhcp|pool|dsl|adsl|vdsl|cable|cust|customer|client|broadband|ppp|"
    r"pppoe|dialup|dial|unassigned|residential)[0-9-]*|(ip|host|static|user)[0-9-]+)(\.|$)")


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report. `check` names the rule, `subject` what it was applied to (a domain,
    an address, a selector, a list), `found` what was seen, `fix` what to publish or run."""

    check: str
    subject: str
    status: Status
    found: str
    fix: str = ""


def txt_line(name: str, text: str) -> str:
    """A zone-file TXT line, the text cut into 255-octet strings (RFC 1035 3.3.14)."""
    return f"{name}. IN TXT " + " ".join(f'"{s}"' for s in txt_strings(text))


def address_term(ip: str) -> str:
    return f"ip{ipaddress.ip_address(ip).version}:{ip}"


def spf_term_name(word: str) -> str:
    return re.split(r"[:/=]", word.lstrip("+-~?").lower(), maxsplit=1)[0]


def spf_suggestion(existing: str | None, missing: Sequence[str]) -> str:
    """The record to publish: the existing one with the missing addresses added before its
    `all` (which becomes -all when it was +all or ?all), or a new one of our addresses."""
    words = existing.split()[1:] if existing else []
    add = [t for t in dict.fromkeys(address_term(ip) for ip in missing) if t not in words]
    for i, word in enumerate(words):
        if spf_term_name(word) == "all":
            qualifier = word[0] if word[0] in "-~" else "-"
            return " ".join(["v=spf1", *words[:i], *add, f"{qualifier}all"])
    if any(w.lower().startswith("redirect=") for w in words):
        return " ".join(["v=spf1", *add, *words])
    return " ".join(["v=spf1", *words, *add, "-all"])


def dmarc_tags(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            pairs.append((name.strip().lower(), value.strip()))
    return pairs


def dmarc_text(tags: Sequence[tuple[str, str]], **changes: str) -> str:
    """The record with tags changed or added (v= stays first, as RFC 7489 6.4 requires)."""
    out = [(n, changes.pop(n, v)) for n, v in tags]
    out += list(changes.items())
    return "; ".join(f"{n}={v}" for n, v in out)


def looks_generic(name: str, ip: str) -> bool:
    """Whether a PTR name looks like an ISP's default for the address (holds its digits, or
    words such as dynamic, dsl, pool): Yahoo requires a non-generic name."""
    address = ipaddress.ip_address(ip)
    lowered = name.lower()
    if address.version == 4:
        octets = str(address).split(".")
        for order in (octets, octets[::-1]):
            if re.search(r"(^|\D)" + r"[-._]".join(order) + r"(\D|$)", lowered) \
                    or "".join(f"{int(o):02x}" for o in order) in lowered:
                return True
    elif address.exploded.replace(":", "")[-8:] in lowered.replace("-", ""):
        return True
    return _GENERIC_WORDS.search(lowered) is not None


def name_covered(name: str, patterns: Sequence[str]) -> bool:
    """RFC 6125 6.4.3: an exact DNS name, or a wildcard "*.rest" covering one leftmost label."""
    return any(mx_pattern_matches(p, name) for p in patterns)


def blocklist_name(ip: str, zone: str) -> str:
    """The DNSBL query name (RFC 5782 2.1 and 2.4): the address reversed (octets for IPv4,
    nibbles for IPv6) under the zone."""
    reverse = ipaddress.ip_address(ip).reverse_pointer
    return reverse.rsplit(".", 2)[0] + "." + zone.lower().rstrip(".")


__all__ = [
    "Finding",
    "Status",
    "address_term",
    "blocklist_name",
    "dmarc_tags",
    "dmarc_text",
    "looks_generic",
    "name_covered",
    "spf_suggestion",
    "spf_term_name",
    "txt_line",
]
