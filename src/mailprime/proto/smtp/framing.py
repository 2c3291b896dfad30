"""Framing of SMTP input: command lines (`LineReader`) and DATA bodies (`DotReader`), streaming,
with bulk `bytes` operations only (no per-octet Python loops).

`LineReader` takes one CRLF-terminated line at a time. A line over the limit is skipped up to the
next LF and reported once (RFC 5321 4.5.3.1.10: "500 Line too long"); a line ended by a bare LF,
or holding NUL or a bare CR, is reported as such (as Postfix's smtpd_forbid_bare_newline).

`DotReader` finds the end of data, undoes dot-stuffing and enforces the body limits (RFC 5321
3.3, 4.5.2, 4.5.3.1.6 and 2.3.8). Theory of operation: the reader works on the connection's
input buffer, which at the start of DATA is given a *virtual* CRLF in front (so the body starts
at a line start and an empty message is simply "\\r\\n.\\r\\n"). Each `step` looks for the one true
end marker, CRLF "." CRLF. Without it, everything but a tail that could begin the marker ("\\r",
"\\r\\n", "\\r\\n.", "\\r\\n.\\r") is taken as a region of whole content; with it, the region runs
to the CRLF before the dot. A region therefore never ends inside a CRLF, nor between a CRLF and a
stuffed dot, so each region can be checked and un-stuffed on its own:

* bare CR or LF: the counts of CR, LF and CRLF differ (SMTP smuggling defence: "\\n.\\n",
  "\\n.\\r\\n", "\\r.\\r" and friends never end the data, and the message is refused);
* NUL octets: `b"\\0" in region`;
* line length: the running length of the open line plus the longest piece between CRLFs;
* un-stuffing: `region.replace(b"\\r\\n.", b"\\r\\n")`.

Past the size limit the reader stops producing content and only looks for the end marker (the
connection reports it at once, so the session drops its spool); the other violations are found
wherever they are and reported at the end of data, whatever the split of the input. Memory is
the buffer the caller fed plus at most four held-back octets.
"""

from __future__ import annotations

import enum

END_OF_DATA = b"\r\n.\r\n"
_HOLD_BACK = tuple(END_OF_DATA[:n] for n in (4, 3, 2, 1))


class AbortReason(enum.StrEnum):
    """Why a message was refused while it was streaming."""

    TOO_BIG = "message too big"  # RFC 1870 / RFC 5321 4.5.3.1.10
    BARE_NEWLINE = "bare CR or LF in message"  # RFC 5321 2.3.8
    LINE_TOO_LONG = "line too long"  # RFC 5321 4.5.3.1.6
    NUL = "NUL octet in message"  # RFC 6152 3: not even 8BITMIME carries NUL
    CONNECTION_LOST = "connection lost"
    SERVER_CLOSED = "connection closed by the server"  # a 421: timeout, shutdown, flood
    ABANDONED = "transaction abandoned"  # RSET or QUIT between BDAT chunks


class LineError(enum.Enum):
    TOO_LONG = "Line too long"  # RFC 5321 4.5.3.1.4 / 4.5.3.1.10
    BARE_LF = "Bare LF not allowed, end lines with CRLF"  # RFC 5321 2.3.8
    BAD_OCTET = "NUL or bare CR not allowed in a command"
    BAD_UTF8 = "Command is not valid UTF-8"  # reported by the caller, which decodes


class LineReader:
    __slots__ = ("_skipping",)

    def __init__(self) -> None:
        self._skipping = False  # inside a line that was too long, until its LF

    def take(self, buf: bytearray, limit: int) -> bytes | LineError | None:
        """Removes one line from `buf` and returns it without its CRLF; None when more data is
        needed. `limit` counts the CRLF."""
        newline = buf.find(b"\n")
        if self._skipping:
            if newline < 0:
                buf.clear()
                return None
            del buf[: newline + 1]
            self._skipping = False
            return LineError.TOO_LONG
        if newline < 0:
            if len(buf) > limit:  # resynchronise at the next LF
                buf.clear()
                self._skipping = True
            return None
        line = bytes(buf[:newline])
        del buf[: newline + 1]
        if newline + 1 > limit:
            return LineError.TOO_LONG
        if not line.endswith(b"\r"):
            return LineError.BARE_LF
        line = line[:-1]
        if b"\r" in line or b"\0" in line:
            return LineError.BAD_OCTET
        return line


def _held_back(buf: bytearray) -> int:
    """How many trailing octets could be the start of the end marker."""
    for prefix in _HOLD_BACK:
        if buf.endswith(prefix):
            return len(prefix)
    return 0


# When a message breaks several rules, the reply names the first of these (smuggling first).
_PRIORITY = (AbortReason.BARE_NEWLINE, AbortReason.NUL, AbortReason.LINE_TOO_LONG)


class DotReader:
    """Reads one DATA body. `step` consumes from the buffer; see the module docstring."""

    __slots__ = ("_found", "_line_len", "_max_line", "_max_size", "_virtual", "size", "too_big")

    def __init__(self, *, max_size: int, max_line: int) -> None:
        self._max_size = max_size
        self._max_line = max_line - 2  # the limit counts the CRLF (RFC 5321 4.5.3.1.6)
        self._line_len = 0
        self._virtual = True  # the buffer starts with the virtual CRLF the caller inserted
        self._found: set[AbortReason] = set()
        self.size = 0  # content octets so far, after un-stuffing
        self.too_big = False

    @property
    def failure(self) -> AbortReason | None:
        """Why the message must be refused, if it must. Only TOO_BIG stops the content early;
        the other rules are checked over the whole body, so that the verdict does not depend on
        how the input was split into reads."""
        if self.too_big:
            return AbortReason.TOO_BIG
        return next((reason for reason in _PRIORITY if reason in self._found), None)

    def step(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consumes what it can from `buf`; returns (content, at_end)."""
        end = buf.find(END_OF_DATA)
        if end >= 0:
            cut, consumed = end + 2, end + len(END_OF_DATA)
        else:
            cut = consumed = len(buf) - _held_back(buf)
        if cut <= 0:
            return b"", False
        region = bytes(buf[:cut])
        del buf[:consumed]
        if self.too_big:
            return b"", end >= 0
        self._check(region)
        out = region.replace(b"\r\n.", b"\r\n")
        if self._virtual:
            out = out[2:]
            self._virtual = False
        self.size += len(out)
        if self.size > self._max_size:
            self.too_big = True
            return b"", end >= 0
        return out, end >= 0

    def _check(self, region: bytes) -> None:
        found = self._found
        if AbortReason.BARE_NEWLINE not in found:
            crlf = region.count(b"\r\n")
            if region.count(b"\r") != crlf or region.count(b"\n") != crlf:
                found.add(AbortReason.BARE_NEWLINE)
        if AbortReason.NUL not in found and b"\0" in region:
            found.add(AbortReason.NUL)
        if AbortReason.LINE_TOO_LONG not in found and not self._line_ok(region):
            found.add(AbortReason.LINE_TOO_LONG)

    def _line_ok(self, region: bytes) -> bool:
        """Tracks the length of the open line across regions (wire octets, stuffed dot included)."""
        if self._line_len + len(region) <= self._max_line:
            last = region.rfind(b"\r\n")
            self._line_len = len(region) - last - 2 if last >= 0 else self._line_len + len(region)
            return True
        pieces = region.split(b"\r\n")
        if self._line_len + len(pieces[0]) > self._max_line:
            return False
        if len(pieces) == 1:
            self._line_len += len(pieces[0])
            return True
        if max(map(len, pieces)) > self._max_line:
            return False
        self._line_len = len(pieces[-1])
        return True
