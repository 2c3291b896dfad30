"""ENVELOPE (RFC 3501 7.4.2, RFC 9051 7.5.2) and the RFC 5322 address parser behind it.

`envelope(header)` takes a header section and returns the ten-item list
(date subject from sender reply-to to cc bcc in-reply-to message-id) in the neutral
`ImapValue` form (see imap_values). An address is (name adl mailbox host); a group is opened by
(NIL NIL "group name" NIL) and closed by (NIL NIL NIL NIL) (RFC 3501 7.4.2).

Values are the fields as written, unfolded: RFC 2047 encoded-words and 8-bit octets are passed
through, not decoded, as every server does (the client decodes). Like Dovecot 2.3, whose
answers the tests replay:

* date, in-reply-to and message-id are the raw value less its leading whitespace; the subject
  and display names have their whitespace runs collapsed to one space;
* a display name is the phrase before "<addr>", quoted strings unquoted; with no phrase, the last
  comment of the address ("user@host (Real Name)") stands in;
* a quoted local-part is returned unquoted ("john doe" for "john doe"@example.com);
* a part that cannot be found is filled in: MISSING_MAILBOX, MISSING_DOMAIN (never NIL, which
  would read as a group marker), and an angle address without its ">" gets SYNTAX_ERROR;
* Sender and Reply-To default to From when absent or empty (RFC 3501 7.4.2).

Differences from Dovecot: the first of repeated fields is used (Dovecot joins repeated address
fields and keeps the last subject), and empty list elements (",,", RFC 5322 4.4 obs-addr-list)
are skipped rather than reported as MISSING_MAILBOX.
"""

from __future__ import annotations

from mailprime.message.header_lexer import HeaderScanner, first_value, named_fields
from mailprime.message.imap_values import ImapValue

MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"
# RFC 5322 sets no limit on addresses per field; a reply listing more is useless and costly.
MAX_ADDRESSES = 10_000

_ENVELOPE_FIELDS = (b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
                    b"in-reply-to", b"message-id")

# (name, adl, mailbox, host); mailbox and host are None only in group markers.
Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def envelope(header: bytes) -> ImapValue:
    """The ENVELOPE of a message whose header section is `header`."""
    fields = named_fields(header, _ENVELOPE_FIELDS)

    def text(name: bytes) -> bytes | None:
        return first_value(header, fields, name)

    def addresses(name: bytes) -> list[Address]:
        value = text(name)
        return parse_address_list(value) if value is not None else []

    subject = text(b"subject")
    from_ = addresses(b"from")
    return (
        text(b"date"),
        _for_humans(subject) if subject is not None else None,
        _address_field(from_),
        _address_field(addresses(b"sender") or from_),
        _address_field(addresses(b"reply-to") or from_),
        _address_field(addresses(b"to")),
        _address_field(addresses(b"cc")),
        _address_field(addresses(b"bcc")),
        text(b"in-reply-to"),
        text(b"message-id"),
    )


def _address_field(addresses: list[Address]) -> ImapValue:
    if not addresses:
        return None
    items: list[ImapValue] = [tuple(address) for address in addresses]
    return (items,)


def _for_humans(value: bytes) -> bytes:
    return b" ".join(value.split())


# Addresses (RFC 5322 3.4) -----------------------------------------------------------------------

def parse_address_list(value: bytes) -> list[Address]:
    """The addresses of an address-list field value (From, To, Cc...), groups flattened into
    start and end markers. Never raises; junk between addresses is skipped."""
    scanner = HeaderScanner(value)
    out: list[Address] = []
    while len(out) < MAX_ADDRESSES:
        scanner.skip_cfws()
        if scanner.at_end():
            break
        if scanner.accept(b","):
            continue  # an empty list element (RFC 5322 4.4 obs-addr-list)
        before = scanner.pos
        if not _group(scanner, out):
            scanner.pos = before
            _mailbox(scanner, out)
        _skip_junk(scanner, b",")
        if scanner.pos == before:
            scanner.pos += 1  # cannot happen with the rules above; guarantees progress anyway
    return out[:MAX_ADDRESSES]


def _skip_junk(scanner: HeaderScanner, stops: bytes) -> None:
    """After an address: anything up to the next separator is junk (not consumed: the caller
    decides what the separator means)."""
    scanner.skip_cfws()
    if not scanner.at_end() and scanner.peek() not in stops:
        scanner.skip_to(stops)


def _group(scanner: HeaderScanner, out: list[Address]) -> bool:
    """group = display-name ":" [group-list] ";" (RFC 5322 3.4). False, having consumed
    anything, when the text is not a group."""
    name = scanner.phrase()
    scanner.skip_cfws()
    if not name or not scanner.accept(b":"):
        return False
    out.append((None, None, name, None))
    while len(out) < MAX_ADDRESSES:
        scanner.skip_cfws()
        if scanner.at_end() or scanner.accept(b";"):
            break
        if scanner.accept(b","):
            continue
        before = scanner.pos
        _mailbox(scanner, out)
        _skip_junk(scanner, b",;")
        if scanner.pos == before:
            scanner.pos += 1
    out.append((None, None, None, None))
    return True


def _mailbox(scanner: HeaderScanner, out: list[Address]) -> None:
    """mailbox = name-addr / addr-spec; always adds one address."""
    start = scanner.pos
    scanner.last_comment = None
    name = scanner.phrase()
    scanner.skip_cfws()
    if scanner.peek() == 0x3C:  # '<'
        out.append(_angle_addr(scanner, name or None))
        return
    scanner.pos = start
    scanner.last_comment = None
    mailbox = _dotted(scanner, quoted=True)
    host = _domain(scanner) if scanner.accept(b"@") else b""
    scanner.skip_cfws()
    out.append((scanner.last_comment or None, None, mailbox or MISSING_MAILBOX, host or MISSING_DOMAIN))


def _angle_addr(scanner: HeaderScanner, name: bytes | None) -> Address:
    """"<" [route ":"] addr-spec ">" (RFC 5322 3.4, route from 4.4 obs-angle-addr)."""
    scanner.accept(b"<")
    scanner.skip_cfws()
    route: bytes | None = None
    if scanner.peek() == 0x40:  # '@': a source route
        route = _route(scanner)
    mailbox = _dotted(scanner, quoted=True)
    host = _domain(scanner) if scanner.accept(b"@") else b""
    scanner.skip_cfws()
    if not scanner.accept(b">"):
        scanner.skip_to(b">,")
        scanner.accept(b">")
        return (name, route, mailbox or MISSING_MAILBOX, SYNTAX_ERROR)
    return (name, route, mailbox or MISSING_MAILBOX, host or MISSING_DOMAIN)


def _route(scanner: HeaderScanner) -> bytes | None:
    """obs-route = obs-domain-list ":" (RFC 5322 4.4), returned as "@a,@b"."""
    hops: list[bytes] = []
    while scanner.accept(b"@"):
        hops.append(b"@" + _domain(scanner))
        scanner.skip_cfws()
        while scanner.accept(b","):
            scanner.skip_cfws()
    scanner.accept(b":")
    return b",".join(hops) or None


def _domain(scanner: HeaderScanner) -> bytes:
    """A domain: dot-atom (CFWS allowed around the dots, RFC 5322 4.4) or a domain literal."""
    scanner.skip_cfws()
    if scanner.peek() == 0x5B:  # '['
        return scanner.domain_literal()
    return _dotted(scanner, quoted=False)


def _dotted(scanner: HeaderScanner, *, quoted: bool) -> bytes:
    """Words separated by dots, CFWS allowed around them (RFC 5322 4.4 obs-local-part and
    obs-domain); quoted strings (unquoted on the way) only in a local-part."""
    out = bytearray()
    while True:
        scanner.skip_cfws()
        if quoted and scanner.peek() == 0x22:
            out += scanner.quoted_string()
        else:
            word = scanner.dot_atom()
            if not word:
                break
            out += word
            if word.endswith(b"."):
                continue  # "a. b" (obs-domain with CFWS after the dot)
        scanner.skip_cfws()
        if not scanner.accept(b"."):
            break
        out += b"."
    return bytes(out)


__all__ = [
    "MAX_ADDRESSES",
    "MISSING_DOMAIN",
    "MISSING_MAILBOX",
    "SYNTAX_ERROR",
    "Address",
    "envelope",
    "parse_address_list",
]
