"""The rules a campaign template must follow before any campaign may use it (CAN-SPAM, RFC 8058,
and the mailbox providers' bulk-sender guidelines).

Theory of operation
-------------------
CAN-SPAM (15 U.S.C. 7704(a)(3) and (a)(5)) requires in every commercial message a clear way to
opt out and the sender's valid physical postal address; Gmail and Yahoo require, besides the
RFC 8058 List-Unsubscribe headers the message builder always adds, an unsubscribe link visible
in the body. So a template must show, in its HTML and in its text part:

* `{{ unsubscribe_url }}`: in the HTML as the href of a link with visible text, in the text
  as the URL itself;
* the sender's postal address: `{{ postal_address }}` or the configured address written out.

We check the *rendered* message, not the source: a link inside an HTML comment or in an
`{% if false %}` branch does not count, and an address typed out literally does. The render
uses a sample contact and a marker URL, so the check needs no campaign. A configured postal
address is required: without one the rule cannot be met, and the problem says where to set it.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass

from mailprime.marketing.templates import CompiledTemplate, Recipient, RenderError, render_preview

MARKER_URL = "https://unsubscribe.invalid/check-7f3a9c"
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.DOTALL | re.IGNORECASE)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Problem:
    code: str  # stable, for the API and the CLI: "unsubscribe-link", "postal-address", ...
    part: str  # html, text or config
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.message}"


def _visible(html: str) -> str:
    return _SPACE.sub(" ", html_lib.unescape(_TAG.sub(" ", _COMMENT.sub(" ", html)))).strip()


def _has_link(html: str, url: str) -> bool:
    for m in _ANCHOR.finditer(_COMMENT.sub(" ", html)):
        href = _HREF.search(m.group(1))
        target = next((g for g in href.groups() if g is not None), "") if href else ""
        if html_lib.unescape(target).strip() == url and _visible(m.group(2)):
            return True
    return False


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def check_compliance(compiled: CompiledTemplate, *, postal_address: str,
                     sample: Recipient | None = None) -> list[Problem]:
    """What keeps this template from being sent in a campaign; empty when nothing does."""
    problems: list[Problem] = []
    if not postal_address.strip():
        problems.append(Problem("postal-address-missing", "config",
                                "no postal address is configured: set [marketing] postal_address "
                                "(CAN-SPAM requires the sender's postal address in every message)"))
    sample = sample or Recipient("sample@example.invalid", "Sample Contact")
    try:
        rendered = render_preview(compiled, sample, unsubscribe_url=MARKER_URL,
                                  postal_address=postal_address or "(postal address)",
                                  list_name="List", campaign_name="Campaign")
    except RenderError as exc:
        problems.append(Problem("render", exc.problem.part,
                                f"the template does not render with a sample contact: {exc}"))
        return problems
    if not _has_link(rendered.html, MARKER_URL):
        problems.append(Problem(
            "unsubscribe-link", "html",
            'no visible unsubscribe link: add <a href="{{ unsubscribe_url }}">Unsubscribe</a> '
            "(CAN-SPAM; Gmail and Yahoo require a visible link besides the List-Unsubscribe "
            "header)"))
    if MARKER_URL not in rendered.text:
        problems.append(Problem("unsubscribe-link", "text",
                                "the text part does not show {{ unsubscribe_url }}"))
    if postal_address.strip():
        address = _normal(postal_address)
        if address not in _normal(_visible(rendered.html)):
            problems.append(Problem(
                "postal-address", "html", "the sender's postal address is not shown: add "
                "{{ postal_address }} (CAN-SPAM requires it in every message)"))
        if address not in _normal(rendered.text):
            problems.append(Problem("postal-address", "text",
                                    "the text part does not show {{ postal_address }}"))
    return problems


__all__ = ["MARKER_URL", "Problem", "check_compliance"]
