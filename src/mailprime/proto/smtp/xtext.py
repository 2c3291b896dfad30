"""xtext, the encoding of DSN parameter values (RFC 3461 section 4).

    xtext   = *( xchar / hexchar )
    xchar   = any ASCII character from "!" (33) to "~" (126) except "+" and "="
    hexchar = "+" followed by two upper-case hexadecimal digits

Used by ENVID and ORCPT (RFC 3461) and by the AUTH= parameter of MAIL (RFC 4954 section 5).
"""

from __future__ import annotations

import re

# RFC 3461 section 4: hex digits are upper case only ("+" 2(%x30-39 / %x41-46)).
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")


def is_xtext(text: str) -> bool:
    """True when `text` is well-formed xtext."""
    return _XTEXT.fullmatch(text) is not None


def decode(text: str) -> str:
    """Decodes xtext; raises ValueError when it is not well-formed.

    Decoded octets are read as UTF-8 (so an ORCPT of type utf-8 encoded octet by octet comes back
    whole); octets that are not UTF-8 raise ValueError too.
    """
    if not is_xtext(text):
        raise ValueError(f"not xtext: {text!r}")
    if "+" not in text:
        return text
    out = bytearray()
    pos = 0
    for m in _HEXCHAR.finditer(text):
        out += text[pos : m.start()].encode("ascii")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode("ascii")
    return out.decode("utf-8")


def encode(text: str) -> str:
    """Encodes `text` as xtext: every octet of its UTF-8 form outside 33..126, and "+" and "=",
    becomes "+XX"."""
    out: list[str] = []
    for octet in text.encode("utf-8"):
        if 33 <= octet <= 126 and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)
