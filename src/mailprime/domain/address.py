"""Email addresses as value objects (RFC 5321 section 4.1.2 mailbox syntax, SMTPUTF8 aware)."""

from __future__ import annotations

from dataclasses import dataclass

from mailprime.domain.errors import InvalidAddress

# RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2: local-part <= 64 octets, domain <= 255 octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_PATH = 254

_ATEXT_SPECIALS = set("!#$%&'*+-/=?^_`{|}~.")


def normalize_domain(domain: str) -> str:
    """Lower-cases a domain and converts U-labels to A-labels (IDNA) so that look-ups agree."""
    d = domain.strip().rstrip(".").lower()
    if not d:
        raise InvalidAddress("empty domain")
    if d.startswith("[") and d.endswith("]"):
        return d  # address literal, RFC 5321 section 4.1.3
    try:
        d = d.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidAddress(f"invalid domain {domain!r}: {exc}") from exc
    if len(d) > MAX_DOMAIN:
        raise InvalidAddress("domain longer than 255 octets (RFC 5321 4.5.3.1.2)")
    for label in d.split("."):
        if not label or len(label) > 63:
            raise InvalidAddress(f"invalid domain label in {domain!r}")
        if not all(c.isalnum() or c == "-" for c in label):
            raise InvalidAddress(f"invalid character in domain {domain!r}")
    return d


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A mailbox address. The local part keeps its case (RFC 5321 2.4); the domain is normalised."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        raw = text.strip()
        if raw.startswith("<") and raw.endswith(">"):
            raw = raw[1:-1]
        if len(raw.encode("utf-8")) > MAX_PATH:
            raise InvalidAddress("address longer than RFC 5321 4.5.3.1.3 allows")
        local, sep, domain = raw.rpartition("@")
        if not sep or not local or not domain:
            raise InvalidAddress(f"not an address: {text!r}")
        if len(local.encode("utf-8")) > MAX_LOCAL_PART:
            raise InvalidAddress("local part longer than 64 octets (RFC 5321 4.5.3.1.1)")
        if not (local.startswith('"') and local.endswith('"')):
            for ch in local:
                if ch.isascii() and not (ch.isalnum() or ch in _ATEXT_SPECIALS):
                    raise InvalidAddress(f"invalid character {ch!r} in local part")
            if local.startswith(".") or local.endswith(".") or ".." in local:
                raise InvalidAddress("dots may not start, end or repeat in a local part")
        return cls(local, normalize_domain(domain))

    @property
    def key(self) -> str:
        """The form used to look an address up: local part folded to lower case."""
        return f"{self.local.lower()}@{self.domain}"

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"
