"""The campaign message builder: one complete RFC 5322 message (bytes) per recipient.

Theory of operation
-------------------
A campaign compiles its template once and builds one `MessageBuilder`; the builder then turns
each recipient into the octets the queue stores and DKIM signs. Everything that is the same for
every recipient (From, List-Id, Feedback-ID, the part headers) is formatted once in __init__;
per recipient we render the template, ask `UnsubscribeLinks` for this recipient's signed
links, pass the rendered HTML through the optional `html_filter(html, recipient)` (the
campaign's tracking links, marketing.link_rewriter: a post-render hook, so the compiled template
stays the template), and join bytes. The Date field is formatted at most once a second, the last encoded
Subject is reused when the subject does not vary.

Speed (a campaign builds every message here, and the DKIM signature after it is the only larger
cost): the parts are encoded and their line ends made CRLF as bytes (bytes.replace is several
times faster than str.replace on a 10 KB body); the HTML's non-ASCII characters become
references in the same encode; short header fields skip the folding loop (a field that fits on
a line is what fold() would return) and List-Unsubscribe, whose only fold point is the ", "
between its two URLs, is folded directly; the header section's line lengths are checked once
on its octets (lines_fit) rather than line by line. The HTML part is made from the render's
chunks by HtmlParts: the link rewriting, the <style>/<script> check, the references and the
CRLF of the template's fixed text are worked out once per campaign, and a message joins
pieces (~13 us a message less on the bench newsletter); where that cannot be shown to give
the same octets, the general way (html_filter on the joined HTML, then the encoding).

The header section:

* From with the display name (RFC 5322 3.6.2; a non-ASCII name as an RFC 2047 encoded-word),
  To with the contact's name, Subject (RFC 2047 encoded-words when not ASCII), Date, Message-ID
  at the sending domain (RFC 5322 3.6.4), MIME-Version (RFC 2045 4).
* List-Unsubscribe with the HTTPS URL (first) and a mailto, and List-Unsubscribe-Post:
  List-Unsubscribe=One-Click (RFC 8058 3.1: the URL must be HTTPS and carry everything needed,
  here the signed per-recipient token; the pair is covered by DKIM, which message.dkim signs).
* List-Id (RFC 2919): the list's name as a phrase and <label.sending-domain> as its id.
* Feedback-ID "campaign:sending-domain:marketing:sender" for Gmail's feedback loop
  (message.feedback_id cleans each identifier).
* Precedence: bulk is not added: it is not a standard field (RFC 2076 3.9 lists it as
  "non-standard, controversial, discouraged"), RFC 3834 2 tells auto-responders to recognise
  list mail by the List-* fields we send, and no provider's sender guidelines ask for it.

Header injection: every value that becomes a header (names, subject, addresses, URLs, ids) is
refused with HeaderError if it holds CR, LF or another control character; nothing is silently
cleaned, so a bad contact fails alone and visibly.

The body is multipart/alternative, text first then HTML (RFC 2046 5.1.4: the last part is the
preferred one). Each part is 7bit when it is ASCII with lines of at most 998 octets (RFC 5322
2.1.1, RFC 2045 2.7), else quoted-printable or base64, whichever is smaller (QP for mostly-Latin
text, base64 for e.g. Cyrillic or CJK, where QP would triple the size); both keep lines within
76 characters (RFC 2045 6.7, 6.8). The boundary is random and checked absent from the parts.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import formataddr
from typing import Protocol, runtime_checkable

from mailprime.domain.audience import list_label
from mailprime.domain.errors import DomainError
from mailprime.domain.ids import CampaignId, ListId
from mailprime.marketing.html_marks import A_TAG, last_body_end
from mailprime.marketing.templates import (
    CompiledTemplate,
    MergeData,
    Recipient,
    RenderedMessage,
    render_chunks,
    template_strings,
)
from mailprime.message.feedback_id import feedback_id
from mailprime.message.headers import FOLD_WIDTH, MAX_LINE, fold, format_date

MAX_SUBJECT = 998  # rendered characters (RFC 5322 2.1.1: a line, unfolded, at most 998)
MAX_LIST_ID = 255  # RFC 2919 2: the list-id is at most 255 octets
MAX_URL = 2048
_B64_LINE = 76  # RFC 2045 6.8: encoded lines of at most 76 characters
_QP_LINE = 76  # RFC 2045 6.7 (5): the same for quoted-printable
_QP_LIMIT = 998


class HeaderError(DomainError):
    """A value that would become a header field is not allowed (CR/LF: a header injection)."""

    http_status = 422


class UnsubscribeLinks(Protocol):
    """Makes one recipient's signed unsubscribe links (marketing.tokens signs them)."""

    def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str: ...

    def mailto_for(self, recipient: Recipient, campaign: CampaignInfo) -> str: ...


@runtime_checkable
class LinkRewriter(Protocol):
    """What the owner of an html_filter may offer so that the builder applies the filter's
    rewriting to the template's fixed text once per campaign (TrackingLinks does: see
    HtmlParts). Each answer must be what html_filter does to a message."""

    def html_filter(self, html: str, recipient: Recipient) -> str: ...

    def tag_rewrite(self, text: str) -> tuple[str, str] | None: ...

    def message_token(self, recipient: Recipient) -> str: ...

    def pixel_pieces(self) -> tuple[str, str] | None: ...


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """What every message of one campaign shares."""

    campaign_id: CampaignId
    name: str
    from_address: str
    from_name: str
    list_name: str
    list_label: str  # List-Id is <list_label.sending-domain>: letters, digits, "-"
    postal_address: str
    list_id: ListId | None = None
    reply_to: str | None = None
    feedback_sender: str = "mailprime"
    feedback_type: str = "marketing"

    @property
    def sending_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    data: bytes
    message_id: str
    smtputf8: bool  # an address is not ASCII (RFC 6531): send with SMTPUTF8
    rendered: RenderedMessage


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value(value: str, what: str) -> str:
    """`value` if it can go into a header: no CR, LF or other control character."""
    bad = _CONTROL.search(value)
    if bad is not None:
        if bad.group() in "\r\n":
            raise HeaderError(f"{what} contains a line break (CR or LF): refused, it would "
                              "inject header fields")
        raise HeaderError(f"{what} contains the control character U+{ord(bad.group()):04X}")
    return value


_NOT_IN_ADDRESS = re.compile(r'[ <>,;"]')
_ADDR_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # email.utils.specialsre: formataddr quotes


def _address(name: str, address: str, what: str) -> tuple[str, bool]:
    """(the address field value, whether it needs SMTPUTF8)."""
    if name.isascii() and address.isascii() and name.isprintable() and address.isprintable() \
            and "@" in address and _NOT_IN_ADDRESS.search(address) is None:
        # The usual case, checked in C: printable ASCII holds no control character, so the
        # checks below would all pass. A name without formataddr's specials (among them the
        # two it escapes) is written as it is, which is what formataddr writes.
        if not name:
            return address, False
        if _ADDR_SPECIALS.search(name) is None:
            return f"{name} <{address}>", False
        return formataddr((name, address), "utf-8"), False
    header_value(name, f"{what} name")
    header_value(address, f"{what} address")
    if "@" not in address or any(ch in address for ch in " <>,;\""):
        raise HeaderError(f"{what} address {address!r} is not an address")
    if address.isascii():
        if name.isascii():
            return formataddr((name, address), "utf-8"), False
        # RFC 2047 2: an encoded-word is at most 75 characters, so a long name is several,
        # separated by spaces (which decoders drop between encoded-words, 6.2); formataddr
        # would write one of any length.
        return f"{Header(name, 'utf-8').encode(maxlinelen=75, linesep=' ')} <{address}>", False
    # RFC 6532: with SMTPUTF8 the field is raw UTF-8; the name is a quoted-string.
    if not name:
        return address, True
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>', True


def _subject(subject: str) -> str:
    header_value(subject, "the subject")
    if len(subject) > MAX_SUBJECT:
        raise HeaderError(f"the subject has {len(subject):,} characters; at most {MAX_SUBJECT}")
    if subject.isascii():
        return fold("Subject", subject)
    encoded = Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"Subject: {encoded}\r\n"


def list_id_for(label: str, domain: str) -> str:
    """The list-id our List-Id fields carry for a list whose `MailingList.list_id_label` is
    `label`, at `domain`: `label.domain`, the label capped (below). adapters.list_consent
    compares submitted list mail's List-Id with this, so that it knows the shortened form."""
    return f"{_capped_label(list_label(label), domain)}.{domain}"


def _capped_label(label: str, domain: str) -> str:
    """The label, shortened so that `label.domain` fits RFC 2919's 255 octets. The cut is
    taken from the name part, never from the "-<list id>" at its end (by which a reply, a
    complaint or submitted list mail maps back to the list: domain.audience.list_of_label)
    nor from the domain (the list-id's namespace): cutting the whole string at 255 could drop
    either for a long list name."""
    room = MAX_LIST_ID - len(domain) - 1
    if len(label) <= room:
        return label
    name, dash, number = label.rpartition("-")
    if dash and number.isdigit():
        # At least one octet of name; a domain so long that even that does not fit (over
        # ~240 octets) keeps the whole "x-<id>" and goes over: a usable list-id over a cut one.
        return f"{name[:max(1, room - len(number) - 1)].rstrip('-') or 'l'}-{number}"
    return label[:max(1, room)]


def _list_id(label: str, list_name: str, domain: str) -> str:
    list_id = list_id_for(label, domain)
    header_value(list_name, "the list name")
    if list_name.isascii():
        phrase = formataddr((list_name, "x@x")).rpartition(" <")[0] if list_name else ""
    else:
        phrase = Header(list_name, "utf-8").encode()
    return fold("List-Id", f"{phrase} <{list_id}>" if phrase else f"<{list_id}>")


def _check_url(url: str, scheme: str) -> str:
    if url.startswith(scheme) and len(url) <= MAX_URL and url.isascii() and url.isprintable() \
            and " " not in url and "<" not in url and ">" not in url and '"' not in url:
        return url  # the usual case, in C: printable ASCII (so no control character) as below
    header_value(url, "an unsubscribe link")
    if not url.startswith(scheme) or len(url) > MAX_URL or not url.isascii() \
            or any(ch in url for ch in " <>\""):
        raise HeaderError(f"an unsubscribe link must be a {scheme} URL of printable ASCII "
                          f"without spaces or <>: {url[:80]!r}")
    return url


def crlf(text: str) -> str:
    if "\r" not in text:  # the usual case: one pass
        return text.replace("\n", "\r\n")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def crlf_octets(data: bytes) -> bytes:
    """crlf() on encoded text: crlf(text).encode() == crlf_octets(text.encode()) (UTF-8 never
    puts a CR or LF octet inside another character), several times faster."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


_RAW_ELEMENTS = re.compile(r"<(style|script)\b.*?</\1", re.DOTALL | re.IGNORECASE)


def _raw_elements_ascii(html: str) -> bool:
    # Measured: this pattern search beats bytes.find on a lowered copy (a find for a name that
    # is not there, "<script", costs as much as the whole pattern search).
    return all(m.group().isascii() for m in _RAW_ELEMENTS.finditer(html))


def ascii_html(html: str) -> str:
    """The HTML with every non-ASCII character written as a character reference (&#183;), the
    same document to any HTML parser (HTML 13.1.4), so that it can go out as 7bit instead of
    quoted-printable, which costs more to encode and is larger. Not where references are not
    decoded: non-ASCII inside <style> or <script> leaves the HTML as it is."""
    if html.isascii() or not _raw_elements_ascii(html):
        return html
    return html.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _ascii_html_octets(html: str) -> bytes:
    """ascii_html(html).encode("utf-8"), without the detour through a str."""
    if html.isascii():
        return html.encode("ascii")
    if not _raw_elements_ascii(html):
        return html.encode("utf-8")
    return html.encode("ascii", "xmlcharrefreplace")


def lines_fit(data: bytes, limit: int = MAX_LINE) -> bool:
    """Whether every line of `data` (each LF preceded by CR, as `crlf` leaves them) has at most
    `limit` octets before its CRLF. A line that fits has its LF within `limit` + 2 octets of its
    start, so each step jumps to the last LF of such a window (a C search backwards) instead of
    splitting the data into lines: a 12 KB part costs a dozen steps."""
    pos, end = 0, len(data)
    while end - pos > limit:
        found = data.rfind(b"\n", pos, pos + limit + 2)
        if found < 0:
            return False
        pos = found + 1
    return True


def quoted_printable_py(data: bytes) -> bytes:
    """Quoted-printable of CRLF text by binascii (the C helper `message._qp.encode` writes the
    same kind of lines in one pass, ~6x faster, where it is built)."""
    # b2a_qp writes its soft line breaks with the line end it saw first, LF when the text has
    # no line break at all: every break becomes CRLF (RFC 2045 6.7, rule 5).
    qp = binascii.b2a_qp(data, istext=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if lines_fit(qp, _QP_LINE):
        return qp
    # b2a_qp does not count the "=20"/"=09" of a line's last SP/HTAB: such a line can reach 77
    # or 78 characters. Cut those once more, never inside an "=XX".
    return b"\r\n".join([_recut(line) if len(line) > _QP_LINE else line
                          for line in qp.split(b"\r\n")])


def _recut(line: bytes) -> bytes:
    pieces = []
    while len(line) > _QP_LINE:
        cut = _QP_LINE - 1  # room for the soft break's "="
        escape = line.rfind(b"=", cut - 2, cut)  # every "=" here starts an "=XX"
        cut = escape if escape > 0 else cut
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return b"=\r\n".join(pieces)


quoted_printable: Callable[[bytes], bytes]
try:  # message/_qp.c, built by `pip install -e .` (optional, like the DKIM helper)
    from mailprime.message._qp import encode as quoted_printable
except ImportError:  # pragma: no cover - only where it could not be built
    quoted_printable = quoted_printable_py


def encode_part(text: str) -> tuple[bytes, str]:
    """(body octets, Content-Transfer-Encoding) for one text part: 7bit when possible, else the
    smaller of quoted-printable and base64."""
    return _encode_octets(text.encode("utf-8"))


def _encode_octets(utf8: bytes) -> tuple[bytes, str]:
    """encode_part of the text whose UTF-8 is `utf8`."""
    return _encode_crlf(crlf_octets(utf8))


def _encode_crlf(data: bytes) -> tuple[bytes, str]:
    """_encode_octets of octets whose line ends are already CRLF."""
    if data.isascii() and lines_fit(data):
        return data, "7bit"
    qp = quoted_printable(data)
    b64_size = (len(data) + 2) // 3 * 4
    b64_size += 2 * (b64_size // _B64_LINE + 1)
    if len(qp) <= b64_size:
        return qp, "quoted-printable"
    raw = base64.b64encode(data)
    return b"\r\n".join(raw[i:i + _B64_LINE] for i in range(0, len(raw), _B64_LINE)), "base64"


_PART_HEADS = {(content_type, cte): (f"Content-Type: {content_type}; charset=utf-8\r\n"
                                      f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii")
               for content_type in ("text/plain", "text/html")
               for cte in ("7bit", "quoted-printable", "base64")}


def _part(content_type: str, utf8: bytes) -> tuple[bytes, bytes]:
    body, cte = _encode_octets(utf8)
    return _PART_HEADS[content_type, cte], body


_ENCODED = frozenset(head for (_, cte), head in _PART_HEADS.items() if cte != "7bit")


def _holds(body: bytes, head: bytes, boundary: str) -> bool:
    """Whether a part's body holds the boundary. Not a quoted-printable or base64 body: every
    boundary starts "=_", which neither can hold (QP's "=" is followed by two hex digits or a
    line break, base64's only at the end, and "_" is in neither alphabet)."""
    return head not in _ENCODED and boundary.encode("ascii") in body


# The marks link_rewriter finds too (marketing.html_marks), and, for HtmlParts, an <a> tag left
# open at the end of a text and the start of a raw-text element.
_A_OPEN = re.compile(r"<a\b[^>]*\Z", re.IGNORECASE)
_RAW_OPEN = re.compile(r"<(style|script)\b", re.IGNORECASE)
# A text ending where a following one could complete a tag name, "</" or "</body": what
# would match across the two cannot be told from either alone.
_OPEN_END = re.compile(r"</?[A-Za-z]*\s*\Z")


def _sent_form(text: str) -> str:
    """`text` as the HTML part sends it when it goes as references (_ascii_html_octets), with
    CRLF line ends, as an ASCII str: it and its neighbours' are joined, then encoded once."""
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii").replace("\n", "\r\n")


@dataclass(frozen=True, slots=True)
class _Segment:
    """What one fixed text of the template becomes in every message (HtmlParts): `text` the
    pieces of the filtered HTML, the message's token between each two; `sent` the same in
    _sent_form. `head`: entered inside an <a> tag begun before, that tag's text here (all of
    the text when `closes` is false). `tail`: the text of an <a> tag left open at the end.
    `body`: where the pixel goes when this is the last text with a </body>: the pieces before
    and after it, as (text before, text after, sent before, sent after)."""

    text: list[str]
    sent: list[str]
    head: str
    closes: bool
    tail: str | None
    body: tuple[list[str], list[str], list[str], list[str]] | None


class HtmlParts:
    """The HTML part of each message, made from the render's chunks with what is known of the
    template's fixed text (the string objects of its compiled code, known by identity).

    html_filter (the links' rewriting) and the part's encoding each look at the whole rendered
    HTML of every message: the <a> tags, the <style>/<script> elements (whose non-ASCII text
    keeps the part from going as references), </body> for the open pixel, CR and LF. Most of
    that HTML is the template's own text, the same in every message; the merge fields between
    are autoescaped, so they hold no "<" or ">" and can neither begin nor end a tag or an
    element. So each fixed text is analysed once (per entry state: inside an <a> tag begun
    before it or not) into pieces that a message's token joins, already in the part's sent
    form; a message then only joins pieces. What is found across two texts is found the same
    way, except where it cannot be told from the texts alone: then (and for a chunk with "<",
    ">" or CR that is not fixed text, such as a field marked safe, or when a fixed text's
    <style>/<script> holds non-ASCII, is left open, or has a tag name, "</" or "</body" cut at
    its end) `html()` answers None and the builder takes the general way, html_filter on the
    joined HTML. An <a> tag made of several chunks (`<a href="{{ unsubscribe_url }}">`) is put
    together and given to the rewriter; if it would be rewritten, the general way too.

    Why the pieces are the same as the general way's: the token (base64url, after a "/" and
    before a quote) cannot take part in a match of any of these patterns, the sent form of a
    text is character by character (references, LF to CRLF; no CR), and the pixel goes before
    the last </body> of the rewritten HTML or at its end in both (TrackingLinks._rewrite)."""

    def __init__(self, template_strings: list[str], rewriter: LinkRewriter | None) -> None:
        self._rewriter = rewriter
        # id -> (the string itself, so that the id stays its own; segment outside a tag,
        # segment inside one; each None when the general way is needed, _UNSEEN until made)
        self._known: dict[int, list[object]] = {
            id(text): [text, _UNSEEN, _UNSEEN] for text in template_strings}

    def _segment(self, text: str, inside: bool) -> _Segment | None:
        if "\r" in text or _OPEN_END.search(text):
            return None
        pos, head, closes = 0, "", True
        if inside:
            end = text.find(">")
            # The tag begun before ends at the first ">" (or goes on past this text).
            closes = end >= 0
            pos = end + 1 if closes else len(text)
            head = text[:pos]
        rewriter = self._rewriter
        pieces: list[str] = []
        start = 0
        after = ""  # the end of the last rewritten tag, which the next piece begins with
        last = pos
        for match in A_TAG.finditer(text, pos):
            last = match.end()
            plan = rewriter.tag_rewrite(match.group()) if rewriter is not None else None
            if plan is not None:
                pieces.append(after + text[start:match.start()] + plan[0])
                after, start = plan[1], match.end()
        pieces.append(after + text[start:])
        open_tag = _A_OPEN.search(text, last) if closes else None
        tail = text[open_tag.start():] if open_tag is not None else None
        # The <style>/<script> elements of the rewritten text ("A" for the token): all within
        # it and ASCII, else the general way.
        joined = "A".join(pieces)
        end = 0
        for raw in _RAW_ELEMENTS.finditer(joined):
            if not raw.group().isascii():
                return None
            end = raw.end()
        if _RAW_OPEN.search(joined, end) is not None:
            return None
        body = None
        for index in range(len(pieces) - 1, -1, -1):
            at = last_body_end(pieces[index])
            if at >= 0:
                before = [*pieces[:index], pieces[index][:at]]
                behind = [pieces[index][at:], *pieces[index + 1:]]
                body = (before, behind, [_sent_form(p) for p in before],
                        [_sent_form(p) for p in behind])
                break
        return _Segment(pieces, [_sent_form(p) for p in pieces], head, closes, tail, body)

    def html(self, chunks: list[str], recipient: Recipient) -> tuple[str, bytes] | None:
        """(the filtered HTML, the part's octets with CRLF line ends), or None: take the
        general way (see the class doc)."""
        rewriter = self._rewriter
        token = rewriter.message_token(recipient) if rewriter is not None else ""
        known = self._known
        text: list[str] = []
        sent: list[str] = []
        inside = False
        tag: list[str] = []  # the pieces of an <a> tag that began in an earlier chunk
        body: tuple[int, _Segment] | None = None
        for chunk in chunks:
            entry = known.get(id(chunk))
            if entry is not None and entry[0] is chunk:
                segment = entry[2 if inside else 1]
                if segment is _UNSEEN:
                    segment = entry[2 if inside else 1] = self._segment(chunk, inside)
                if not isinstance(segment, _Segment):
                    return None
                if inside:
                    tag.append(segment.head)
                    if segment.closes and rewriter is not None \
                            and rewriter.tag_rewrite("".join(tag)) is not None:
                        return None
                if segment.tail is not None:
                    tag = [segment.tail]
                inside = segment.tail is not None or not segment.closes
                if segment.body is not None:
                    body = (len(text), segment)
                if len(segment.text) == 1:
                    text.append(segment.text[0])
                    sent.append(segment.sent[0])
                else:
                    text.append(token.join(segment.text))
                    sent.append(token.join(segment.sent))
            else:
                if "<" in chunk or ">" in chunk or "\r" in chunk:
                    return None
                value = str(chunk)  # a Markup's methods would escape their arguments
                if inside:
                    tag.append(value)
                text.append(value)
                sent.append(_sent_form(value) if not value.isascii() or "\n" in value
                            else value)
        pixel = rewriter.pixel_pieces() if rewriter is not None else None
        if pixel is not None:
            img = token.join(pixel)
            if body is None:
                text.append(img)
                sent.append(img)
            else:
                at, segment = body
                before, behind, sent_before, sent_behind = segment.body  # type: ignore[misc]
                text[at] = f"{token.join(before)}{img}{token.join(behind)}"
                sent[at] = f"{token.join(sent_before)}{img}{token.join(sent_behind)}"
        return "".join(text), "".join(sent).encode("ascii")


_UNSEEN = object()


def _list_unsubscribe(url: str, mailto: str) -> str:
    """fold("List-Unsubscribe", "<url>, <mailto>") for URLs _check_url passed. Without a tab
    (which _check_url lets through, and fold would cut at) the only whitespace after the name is
    the space after the comma: fold keeps the field whole when it fits, else cuts there, and
    cannot cut the second line (no whitespace). Tested against fold."""
    value = f"<{url}>, <{mailto}>"
    if "\t" in value or len(value) + 18 <= FOLD_WIDTH:  # 18: "List-Unsubscribe: "
        return fold("List-Unsubscribe", value)
    return f"List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\n"


class MessageBuilder:
    """Builds one campaign's messages; see the module doc."""

    def __init__(self, compiled: CompiledTemplate, campaign: CampaignInfo,
                 links: UnsubscribeLinks, *, now: Callable[[], datetime] | None = None,
                 html_filter: Callable[[str, Recipient], str] | None = None) -> None:
        self.compiled = compiled
        self.campaign = campaign
        self._links = links
        self._html_filter = html_filter
        # The filter's rewriting applied to the template's fixed text once (HtmlParts), when
        # the filter is a LinkRewriter's own (or there is none).
        owner = getattr(html_filter, "__self__", None)
        rewriter = owner if isinstance(owner, LinkRewriter) else None
        self._html_parts = (HtmlParts(template_strings(compiled.html), rewriter)
                            if html_filter is None or (rewriter is not None
                                                       and html_filter == rewriter.html_filter)
                            else None)
        self._random = random.Random(secrets.randbits(128))
        self._now = now or (lambda: datetime.now(UTC))
        self._domain = campaign.sending_domain
        header_value(campaign.name, "the campaign name")
        header_value(campaign.postal_address, "the postal address")
        from_value, self._from_utf8 = _address(campaign.from_name, campaign.from_address, "From")
        fixed = fold("From", from_value)
        if campaign.reply_to:
            fixed += fold("Reply-To", _address("", campaign.reply_to, "Reply-To")[0])
        self._fixed = fixed
        self._list = (_list_id(campaign.list_label, campaign.list_name, self._domain)
                      + "MIME-Version: 1.0\r\n")
        fbl = feedback_id(campaign=str(campaign.campaign_id), customer=self._domain,
                          mail_type=campaign.feedback_type, sender_id=campaign.feedback_sender)
        self._feedback = fold("Feedback-ID", fbl) if campaign.feedback_sender else ""
        self._date_cache: tuple[int, str] = (-1, "")
        self._subject_cache: tuple[str, str] = ("\x00", "")
        signed = getattr(links, "message_id_for", None)  # looked up once, not per message
        self._signed_message_id: Callable[[Recipient, CampaignInfo], object] | None = (
            signed if callable(signed) else None)

    def _date(self) -> str:
        when = self._now()
        second = int(when.timestamp())
        if self._date_cache[0] != second:
            self._date_cache = (second, fold("Date", format_date(when)))
        return self._date_cache[1]

    def _subject(self, subject: str) -> str:
        if self._subject_cache[0] != subject:
            self._subject_cache = (subject, _subject(subject))
        return self._subject_cache[1]

    def _boundary(self) -> str:
        # A boundary needs to be absent from the parts (checked), not secret: a generator
        # seeded once from the OS, where secrets.token_hex would make a system call (which
        # lets the signing threads take the GIL away from the build) per message.
        return f"=_mp_{self._random.getrandbits(96):024x}"

    def new_message_id(self, recipient: Recipient | None = None) -> str:
        """The recipient's Message-ID at the sending domain: the links' signed one when they
        make one (SignedUnsubscribeLinks.message_id_for, message.msgid_token: a reply then maps
        back to the campaign and contact), else 128 random bits."""
        signed = self._signed_message_id
        if recipient is not None and signed is not None:
            made = signed(recipient, self.campaign)
            if isinstance(made, str):
                return made
        return f"<{secrets.token_hex(16)}@{self._domain}>"

    def build(self, recipient: Recipient, *, message_id: str | None = None) -> BuiltMessage:
        """The message for `recipient`. Raises RenderError (templates) or HeaderError."""
        c = self.campaign
        url = _check_url(self._links.url_for(recipient, c), "https://")
        mailto = _check_url(self._links.mailto_for(recipient, c), "mailto:")
        subject, chunks, text = render_chunks(self.compiled, MergeData(
            recipient, url, c.postal_address, c.list_name, c.name))
        made = self._html_parts.html(chunks, recipient) if self._html_parts is not None else None
        if made is not None:
            html, html_octets = made
            html_body, cte = _encode_crlf(html_octets)
            html_head = _PART_HEADS["text/html", cte]
        else:  # the general way
            html = "".join(chunks)
            if self._html_filter is not None:
                html = self._html_filter(html, recipient)
            html_head, html_body = _part("text/html", _ascii_html_octets(html))
        rendered = RenderedMessage(subject, html, text)
        to_value, to_utf8 = _address(recipient.name, recipient.email, "To")
        mid = header_value(message_id or self.new_message_id(recipient), "the Message-ID")
        fields = (self._fixed, fold("To", to_value), self._subject(rendered.subject),
                  self._date(), f"Message-ID: {mid}\r\n", self._list,
                  _list_unsubscribe(url, mailto),
                  "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", self._feedback)
        text_head, text_body = _part("text/plain", text.encode("utf-8"))
        boundary = self._boundary()
        while _holds(text_body, text_head, boundary) or _holds(html_body, html_head, boundary):
            boundary = self._boundary()  # 96 random bits: effectively never
        head = "".join((*fields, f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'))
        head_octets = head.encode("utf-8")
        # Every line of the head ends with CRLF and holds no other CR or LF (each value passed
        # header_value, each fold made CRLF): lines_fit then answers the line-by-line check.
        if not lines_fit(head_octets):
            for line in head.split("\r\n"):
                if len(line.encode("utf-8")) > MAX_LINE:
                    raise HeaderError(f"a header line would be longer than {MAX_LINE} octets: "
                                      f"{line[:60]!r}...")
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        data = b"".join((
            head_octets, b"\r\n", delimiter[2:], text_head, text_body, delimiter,
            html_head, html_body, f"\r\n--{boundary}--\r\n".encode("ascii"),
        ))
        return BuiltMessage(data, mid, self._from_utf8 or to_utf8, rendered)


__all__ = [
    "BuiltMessage",
    "CampaignInfo",
    "HeaderError",
    "MessageBuilder",
    "UnsubscribeLinks",
    "ascii_html",
    "crlf",
    "crlf_octets",
    "encode_part",
    "header_value",
    "lines_fit",
    "list_id_for",
    "quoted_printable",
    "quoted_printable_py",
]
