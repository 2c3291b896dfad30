"""CSV import and export of contacts, streaming: a million rows in bounded memory.

Theory of operation
-------------------
Import reads the file with the csv module one row at a time, validates each row, and hands the
store a batch of BATCH_SIZE valid, distinct rows, written in one transaction
(`AudienceStore.upsert_contacts`). Memory holds one batch, never the file. A rejected row is
written at once to the rejects report (row number, reason, the address as given), so the report
also streams.

Columns (the header row names them, in any order): `email` (required), `name`, either one
`attributes` column holding a JSON object or any number of `attributes.KEY` columns (values
are taken as JSON when they parse as a JSON number, true/false or null, else as strings; the
two forms can be combined, the dotted columns winning). Addresses are checked for syntax with
email-validator, with no DNS look-up (marketing.contacts says why).

Deduplication: within a batch the first row of an address wins and later ones are rejected as
"duplicate of row N"; across batches, a later row of the same address meets the stored contact
and is handled like any existing contact (updated in upsert mode, skipped in skip-existing
mode). Keeping every address seen to catch all in-file duplicates would make memory grow with
the file, which is what this module must not do.

Memberships: with a list, new members get UNCONFIRMED (single opt-in lists mail them anyway;
double opt-in lists wait for a confirmation) unless the operator passes `confirmed`, an explicit
statement that these people already confirmed; both are recorded in the consent ledger with
source=import. An unsubscribed member is never re-subscribed by an import.

Limits: a row longer than MAX_FIELD characters in one field is refused by the csv module
(field_size_limit); MAX_COLUMNS columns; attributes of one contact at most MAX_ATTRIBUTES_JSON
octets as JSON.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TextIO, cast

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    Contact,
    ContactInput,
    ImportMode,
    JsonValue,
    MembershipStatus,
)
from mailprime.domain.errors import DomainError, InvalidAddress
from mailprime.domain.ids import ContactId, ListId
from mailprime.marketing.contacts import MAX_ATTRIBUTES_JSON, contact_input
from mailprime.storage.ports import AudienceStore

BATCH_SIZE = 1_000
MAX_FIELD = 100_000  # characters in one CSV field
MAX_COLUMNS = 200
EXPORT_PAGE = 1_000

Progress = Callable[[int], None]  # called with the count of rows read so far


class CsvFormatError(DomainError):
    """The file cannot be imported at all (no header, no email column)."""

    http_status = 422


@dataclass(slots=True)
class ImportReport:
    rows: int = 0  # data rows read
    created: int = 0
    updated: int = 0
    skipped: int = 0
    subscribed: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # short reason -> rows


@dataclass(frozen=True, slots=True)
class _Columns:
    email: int
    name: int | None
    attributes: int | None
    dotted: tuple[tuple[int, str], ...]


def _columns(header: list[str]) -> _Columns:
    names = [h.strip() for h in header]
    if len(names) > MAX_COLUMNS:
        raise CsvFormatError(f"more than {MAX_COLUMNS} columns")
    lower = [n.lower() for n in names]
    if "email" not in lower:
        raise CsvFormatError("the header row has no 'email' column")
    dotted = tuple((i, n.split(".", 1)[1]) for i, n in enumerate(names)
                   if n.lower().startswith("attributes.") and n.split(".", 1)[1])
    return _Columns(email=lower.index("email"),
                    name=lower.index("name") if "name" in lower else None,
                    attributes=lower.index("attributes") if "attributes" in lower else None,
                    dotted=dotted)


def _cell_value(text: str) -> JsonValue:
    """A dotted attribute cell: a JSON scalar when it is one ("42", "true"), else the text."""
    stripped = text.strip()
    if stripped in ("true", "false", "null") or (stripped[:1].isdigit() or stripped[:1] == "-"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return text
        if value is None or isinstance(value, bool | int | float):
            return cast(JsonValue, value)
    return text


def _row_input(row: list[str], cols: _Columns) -> ContactInput:
    def cell(i: int | None) -> str:
        return row[i] if i is not None and i < len(row) else ""

    attributes: dict[str, JsonValue] = {}
    raw = cell(cols.attributes).strip()
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidAddress(f"attributes: not JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise InvalidAddress("attributes: not a JSON object")
        attributes.update(cast(dict[str, JsonValue], parsed))
    for i, key in cols.dotted:
        if cell(i) != "":
            attributes[key] = _cell_value(cell(i))
    if len(json.dumps(attributes)) > MAX_ATTRIBUTES_JSON:
        raise InvalidAddress(f"attributes: more than {MAX_ATTRIBUTES_JSON} octets as JSON")
    return contact_input(cell(cols.email), cell(cols.name), attributes)


async def import_contacts(store: AudienceStore, source: TextIO, *, rejects: TextIO | None = None,
                          mode: ImportMode = ImportMode.UPSERT, list_id: ListId | None = None,
                          confirmed: bool = False, wording_version: str = "",
                          progress: Progress | None = None,
                          batch_size: int = BATCH_SIZE) -> ImportReport:
    """Imports `source` (CSV text with a header row); see the module doc."""
    csv.field_size_limit(MAX_FIELD)
    reader = csv.reader(source)
    report = ImportReport()
    out = csv.writer(rejects) if rejects is not None else None
    if out is not None:
        out.writerow(["row", "reason", "email"])
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError("the file is empty (a header row is needed)") from None
    cols = _columns(header)
    evidence = ConsentEvidence(ConsentSource.IMPORT, wording_version=wording_version)
    status = MembershipStatus.CONFIRMED if confirmed else MembershipStatus.UNCONFIRMED
    batch: dict[str, tuple[int, ContactInput]] = {}

    def reject(row_number: int, reason: str, email: str) -> None:
        report.rejected += 1
        short = reason.split(":", maxsplit=1)[0][:60]
        report.reasons[short] = report.reasons.get(short, 0) + 1
        if out is not None:
            out.writerow([row_number, reason, email])

    async def flush() -> None:
        if not batch:
            return
        result = await store.upsert_contacts([item for _, item in batch.values()], mode=mode,
                                             list_id=list_id, status=status, evidence=evidence)
        report.created += result.created
        report.updated += result.updated
        report.skipped += result.skipped
        report.subscribed += result.subscribed
        batch.clear()

    row_number = 1  # the header is row 1, as a spreadsheet numbers it
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over MAX_FIELD, a NUL: the row is lost, not the file
            row_number += 1
            report.rows += 1
            reject(row_number, f"unreadable row: {exc}", "")
            continue
        row_number += 1
        if not any(cell.strip() for cell in row):
            continue  # blank line
        report.rows += 1
        email_cell = row[cols.email] if cols.email < len(row) else ""
        try:
            item = _row_input(row, cols)
        except InvalidAddress as exc:
            reject(row_number, exc.message, email_cell)
        else:
            key = item.email.lower()
            if key in batch:
                reject(row_number, f"duplicate of row {batch[key][0]}", email_cell)
            else:
                batch[key] = (row_number, item)
                if len(batch) >= batch_size:
                    await flush()
        if progress is not None and report.rows % 1_000 == 0:
            progress(report.rows)
    await flush()
    if progress is not None:
        progress(report.rows)
    return report


# ---- export ------------------------------------------------------------------------------

EXPORT_HEADER = ["email", "name", "attributes", "created_at"]


async def export_contacts(store: AudienceStore, out: TextIO, *, list_id: ListId | None = None,
                          progress: Progress | None = None) -> int:
    """Writes every contact (or a list's members, with their status) as CSV, page by page;
    returns the rows written. The `attributes` column is JSON, so the file imports back."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_HEADER + (["status"] if list_id is not None else []))
    count = 0
    async for row in _export_rows(store, list_id):
        writer.writerow(row)
        count += 1
        if progress is not None and count % EXPORT_PAGE == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return count


async def _export_rows(store: AudienceStore, list_id: ListId | None) -> AsyncIterator[list[str]]:
    after: ContactId | None = None
    while True:
        page: list[tuple[Contact, str | None]]
        if list_id is None:
            page = [(c, None) for c in await store.contacts_page(after=after, limit=EXPORT_PAGE)]
        else:
            page = [(c, m.status.value) for c, m in
                    await store.list_members(list_id, after=after, limit=EXPORT_PAGE)]
        for contact, status in page:
            row = [contact.email, contact.name, json.dumps(dict(contact.attributes),
                                                           ensure_ascii=False, sort_keys=True),
                   contact.created_at.isoformat()]
            yield row if status is None else [*row, status]
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1][0].id
