"""A stored message template (issue 5): its name and the three sources, as written.

The sources are kept exactly as given; compiling, checking and rendering them is
marketing.templates' job. A name identifies a template for people (the CLI and the API take
it), the id for campaigns, which keep pointing at the same template when it is renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailprime.domain.ids import TemplateId


@dataclass(frozen=True, slots=True)
class Template:
    id: TemplateId
    name: str
    subject: str
    html: str
    text: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TemplateFields:
    """What a caller gives to create or replace a template."""

    name: str
    subject: str
    html: str
    text: str | None = None


__all__ = ["Template", "TemplateFields"]
