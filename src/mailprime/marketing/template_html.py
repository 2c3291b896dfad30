"""CSS inlining and the text alternative, done once on a template's source when that is safe.

Theory of operation
-------------------
Mail clients ignore most of a <style> block (Gmail keeps only some of it, Outlook.com rewrites
it), so campaign HTML carries its CSS in style="" attributes, put there by css-inline. Media
queries cannot be inlined: they stay in a <style> block (keep_at_rules), where the clients that
support them find them. Remote stylesheets are never fetched (load_remote_stylesheets=False): a
template must not make the server open connections.

Inlining per recipient would parse and re-serialise the whole HTML for every message. The merge
fields almost never touch the CSS, so we inline the *template source* once: each Jinja construct
({{ }}, {% %}, {# #}) is swapped for a placeholder the HTML parser keeps in place, the result is
inlined, and the constructs are put back. Where a construct stands decides its placeholder:

* in text (between tags): an HTML comment `<!--P-->`. A comment stays where it is even inside a
  <table> (the HTML5 parser would "foster-parent" stray text out of a table, reordering
  `{% for %}` around its rows);
* inside a quoted attribute value (href="{{ unsubscribe_url }}"): a plain word, kept verbatim.

Anything else (a construct inside <style>, inside a style="" attribute, inside a tag between
attributes, inside a comment or <script>/<title>/<textarea>) could change what CSS applies or
not survive the parser, so the template falls back to inlining after each render. So does a
source whose placeholders do not all come back exactly once and in order, or whose result no
longer compiles: the check is on the outcome, not only on the scanner's judgement. The
difference between the two modes: once-inlined CSS applies to the template's own markup, so
HTML that a merge field brings in with `|safe` is not styled (it is when inlining per render).

The text alternative is made the same way: html2text runs once on the source with every
construct replaced by a plain word, and the constructs are put back to give a text template
(autoescape off). It falls back to html2text per render under the same conditions.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import css_inline
import html2text

# Jinja's default delimiters. A construct is matched lazily; a "}}" inside a string literal
# ends it early, which is harmless: the text is put back verbatim, and the result is compiled.
_CONSTRUCT = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_RAWTEXT = ("style", "script", "title", "textarea", "xmp", "noscript")
# Elements whose content is text without markup (RCDATA): a plain-word placeholder is kept.
_RCDATA_ENDS = ("</title", "</textarea")
_TAG_OPEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
_ATTR_NAME = re.compile(r"([^\s\"'>/=]+)\s*=\s*$")

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(html: str) -> str:
    """The HTML with its <style> rules moved into style="" attributes (media queries kept)."""
    return str(_INLINER.inline(html))


def _text_converter() -> html2text.HTML2Text:
    h = html2text.HTML2Text()
    h.unicode_snob = True  # keep "é", not "e"
    h.ignore_images = True  # an image's alt text in a text part reads as noise
    h.ignore_tables = True  # layout tables, not data: their cells become paragraphs
    h.ignore_emphasis = True
    h.body_width = 78  # RFC 5322 2.1.1 recommends 78
    h.protect_links = True  # <url> so a long URL is never wrapped
    h.single_line_break = False
    return h


_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_HEAD = re.compile(r"<head[\s>].*?</head\s*>", re.DOTALL | re.IGNORECASE)


def html_to_text(html: str) -> str:
    """The text alternative of an HTML body: html2text's Markdown-like text, with its trailing
    spaces (Markdown line breaks) and runs of blank lines removed."""
    text = _TRAILING_SPACE.sub("", str(_text_converter().handle(html)))
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


@dataclass(frozen=True, slots=True)
class _Slot:
    start: int
    end: int
    where: str  # "text", "attr" or "other"


def _slots(source: str) -> list[_Slot]:
    """Each Jinja construct with where it stands in the HTML (see the module doc)."""
    spans = [(m.start(), m.end()) for m in _CONSTRUCT.finditer(source)]
    if not spans:
        return []
    masked = list(source)
    for start, end in spans:
        masked[start:end] = " " * (end - start)
    text = "".join(masked)
    starts = dict(spans)
    out: list[_Slot] = []
    state, quote, raw_end, attr_start = "text", "", "", 0
    i, n = 0, len(text)
    while i < n:
        if i in starts:
            where = "other"
            if state == "text":
                where = "text"
            elif state == "value":
                name = _ATTR_NAME.search(text, max(0, attr_start - 200), attr_start)
                where = "other" if name and name.group(1).lower() == "style" else "attr"
            elif state == "raw" and raw_end in _RCDATA_ENDS:
                where = "attr"  # escaped text, no markup: a plain word survives
            out.append(_Slot(i, starts[i], where))
            i = starts[i]
            continue
        ch = text[i]
        if state == "text":
            if text.startswith("<!--", i):
                state, i = "comment", i + 4
                continue
            m = _TAG_OPEN.match(text, i)
            if m:
                tag = m.group(2).lower()
                state = "tag"
                raw_end = f"</{tag}" if not m.group(1) and tag in _RAWTEXT else ""
                i = m.end()
                continue
        elif state == "comment":
            if text.startswith("-->", i):
                state, i = "text", i + 3
                continue
        elif state == "raw":
            if text[i:i + len(raw_end)].lower() == raw_end:
                state = "tag"
                raw_end = ""
                i += 2
                continue
        elif state == "tag":
            if ch in "\"'":
                state, quote, attr_start = "value", ch, i
            elif ch == ">":
                state = "raw" if raw_end else "text"
        elif state == "value" and ch == quote:
            state = "tag"
        i += 1
    return out


def _nonce(source: str) -> str:
    for _ in range(100):
        nonce = "mpj" + secrets.token_hex(6)
        if nonce not in source:
            return nonce
    raise RuntimeError("no placeholder absent from the source")  # 2**-4800: cannot happen


def _restore(result: str, tokens: list[str], slots_text: list[str]) -> str | None:
    """Puts the constructs back; None unless every placeholder is there once, in order."""
    out: list[str] = []
    pos = 0
    for token, original in zip(tokens, slots_text, strict=True):
        at = result.find(token, pos)
        if at < 0 or result.find(token, at + len(token)) >= 0:
            return None
        out.append(result[pos:at])
        out.append(original)
        pos = at + len(token)
    out.append(result[pos:])
    return "".join(out)


def inline_source(source: str) -> str | None:
    """The template source with its CSS inlined and its Jinja constructs intact, or None when
    that is not safe (the caller then inlines after each render)."""
    slots = _slots(source)
    if any(s.where == "other" for s in slots):
        return None
    nonce = _nonce(source)
    words = [f"{nonce}x{k}x" for k in range(len(slots))]
    tokens = [f"<!--{w}-->" if s.where == "text" else w for s, w in zip(slots, words, strict=True)]
    protected = _substitute(source, slots, tokens)
    try:
        inlined = inline_css(protected)
    except css_inline.InlineError:
        return None
    return _restore(inlined, tokens, [source[s.start:s.end] for s in slots])


def text_source(source: str) -> str | None:
    """A text template made from an HTML template source, or None when that is not safe."""
    source = _HEAD.sub("", source, count=1)  # the title and styles are not text of the message
    slots = _slots(source)
    if any(s.where == "other" for s in slots):
        return None
    nonce = _nonce(source)
    words = [f"{nonce}x{k}x" for k in range(len(slots))]
    protected = _substitute(source, slots, words)
    return _restore(html_to_text(protected), words, [source[s.start:s.end] for s in slots])


def _substitute(source: str, slots: list[_Slot], tokens: list[str]) -> str:
    out: list[str] = []
    pos = 0
    for slot, token in zip(slots, tokens, strict=True):
        out.append(source[pos:slot.start])
        out.append(token)
        pos = slot.end
    out.append(source[pos:])
    return "".join(out)


__all__ = ["html_to_text", "inline_css", "inline_source", "text_source"]
