"""The marks in a campaign's HTML that the link rewriter (marketing.link_rewriter) and the
message builder's per-campaign HTML analysis (marketing.message_builder, HtmlParts) must find
alike: an <a> tag and </body>. One definition for both, so the builder's shortcut can never
disagree with the rewriting it stands for."""

from __future__ import annotations

import re

A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def last_body_end(html: str) -> int:
    """Where the last match of BODY_END starts, or -1: tried only at each "</" from the end
    back (found by str.rfind), not across the whole body; no two matches overlap (each holds
    one "<"), so the first found from the end is the last."""
    pos = len(html)
    while (at := html.rfind("</", 0, pos)) >= 0:
        if BODY_END.match(html, at):
            return at
        pos = at + 1
    return -1


__all__ = ["A_TAG", "BODY_END", "last_body_end"]
