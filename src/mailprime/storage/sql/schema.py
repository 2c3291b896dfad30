"""The tables, as SQLAlchemy Core metadata (the migrations in storage/migrations create them).

Ids that can grow past 2**31 are BIGINT on PostgreSQL but INTEGER on SQLite, where only an
INTEGER PRIMARY KEY is an alias of the rowid and therefore auto-increments.
Every timestamp is stored in UTC and comes back timezone-aware (`UtcDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator, TypeEngine

if TYPE_CHECKING:
    from sqlalchemy.sql.type_api import _BindProcessorType


# SQLAlchemy's own SQLite DATETIME storage format, which its result processor parses back.
_SQLITE_FORMAT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def sqlite_stamp(value: datetime) -> str:
    """A timezone-aware datetime as a UtcDateTime column keeps it on SQLite: what its bind
    processor writes, and what the bulk statements (bulk.py) bind themselves."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to storage; pass a timezone-aware UTC datetime")
    u = value.astimezone(UTC)
    return _SQLITE_FORMAT % (u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; TIMESTAMPTZ on PostgreSQL, fixed-width UTC text on SQLite.

    SQLite has no timestamp type: SQLAlchemy writes "YYYY-MM-DD HH:MM:SS.ffffff", which sorts and
    compares correctly as text only if every value is in the same zone, hence the UTC conversion.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to storage; pass a timezone-aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> _BindProcessorType[datetime] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        # A batch binds the same `now` to thousands of cells; formatting it once per batch instead
        # of per cell is a measurable share of the writer's time. The cache is one tuple, replaced
        # whole, so threads sharing this processor never see a value paired with another's text.
        cache: list[tuple[datetime | None, str | None]] = [(None, None)]

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            hit = cache[0]
            if hit[0] is value:
                return hit[1]
            text = sqlite_stamp(value)
            cache[0] = (value, text)
            return text

        return process

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def big_id() -> TypeEngine[int]:
    return BigInteger().with_variant(Integer(), "sqlite")


# Constraint names fixed by convention so that the migrations and this module agree on every
# backend (and a later migration can drop a constraint by name).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# ---- directory -----------------------------------------------------------------------------

domains = Table(
    "domains", metadata,
    Column("name", String(255), primary_key=True),  # lower-case A-labels
    Column("created_at", UtcDateTime(), nullable=False),
)

accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False),  # as given, domain normalised
    Column("address_key", String(320), nullable=False, unique=True),  # local part lower-cased
    Column("password_hash", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    sqlite_autoincrement=True,  # migration 0004: ids never reused
)

aliases = Table(
    "aliases", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(320), nullable=False),  # address key, or "@domain" (catch-all)
    Column("destination", String(320), nullable=False),
    UniqueConstraint("source", "destination"),
)

# ---- mail store ----------------------------------------------------------------------------

blobs = Table(
    "blobs", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=True),  # inline content (size <= inline_max)
    Column("path", Text, nullable=True),  # else: a file under the spool directory, relative
    Column("created_at", UtcDateTime(), nullable=False),
    # With `path`: octets that come before the file's content (the trace headers of a body that
    # was streamed to the spool before they were known). Migration 0002.
    Column("prefix", LargeBinary, nullable=True),
    # What the content needs before it goes out as a multi-line body (POP3 RETR): a
    # storage.ports.LineForm, found where the content is written; NULL = not known (written
    # before migration 0008, or streamed to a spool file). With DOT_LINES, the offsets of the
    # lines that start with "." (little-endian 32-bit; NULL when there are too many to keep).
    # Migration 0008.
    Column("line_form", SmallInteger, nullable=True),
    Column("dot_lines", LargeBinary, nullable=True),
    # With `path`: where the content starts in a file it shares with other blobs (a batch of
    # queued messages written as one file: storage/sql/batch_file.py); it is `size` octets
    # long. NULL: the file is this blob's alone. Migration 0016.
    Column("file_offset", BigInteger, nullable=True),
    # Whether another row still names a shared file, asked when a blob goes (release_blobs).
    Index(None, "path", sqlite_where=text("path IS NOT NULL"),
          postgresql_where=text("path IS NOT NULL")),
    sqlite_autoincrement=True,  # migration 0004: ids never reused
)

mailboxes = Table(
    "mailboxes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False),
    Column("special_use", String(32), nullable=True),
    # Migration 0003: IMAP subscriptions and RFC 7162 modification sequences.
    Column("subscribed", Boolean, nullable=False, default=True, server_default=true()),
    Column("highestmodseq", BigInteger, nullable=False, default=1, server_default="1"),
    Column("expunged_modseq", BigInteger, nullable=False, default=0, server_default="0"),
    UniqueConstraint("account_id", "name"),
    sqlite_autoincrement=True,  # migration 0004: ids never reused
)

mailbox_messages = Table(
    "mailbox_messages", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("blob_id", big_id(), ForeignKey("blobs.id"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("internal_date", UtcDateTime(), nullable=False),
    Column("flags", Text, nullable=False, default=""),  # space-separated, sorted
    Column("modseq", BigInteger, nullable=False, default=1, server_default="1"),  # migration 0003
    UniqueConstraint("mailbox_id", "uid"),
    Index(None, "blob_id"),
    Index(None, "mailbox_id", "modseq"),
)

# ---- outbound queue ------------------------------------------------------------------------

queue_messages = Table(
    "queue_messages", metadata,
    Column("id", String(64), primary_key=True),
    Column("sender", Text, nullable=False),
    Column("blob_id", big_id(), ForeignKey("blobs.id"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("dsn_ret", String(8), nullable=True),
    Column("dsn_envid", Text, nullable=True),
    Column("smtputf8", Boolean, nullable=False, default=False),
    Column("source", String(32), nullable=False, default=""),
    Column("client", Text, nullable=False, default=""),
    # An octet above 127 in the content, found at accept time so that delivery can declare
    # BODY=8BITMIME (RFC 6152) without reading the content first. Migration 0002.
    Column("body_8bit", Boolean, nullable=False, default=False, server_default=false()),
    # RFC 8689: MAIL FROM ... REQUIRETLS (every hop verified TLS offering REQUIRETLS), and
    # "TLS-Required: No" without it (the recipient's MTA-STS policy is ignored). Migration 0007.
    Column("require_tls", Boolean, nullable=False, default=False, server_default=false()),
    Column("tls_optional", Boolean, nullable=False, default=False, server_default=false()),
    Index(None, "blob_id"),
)

queue_recipients = Table(
    "queue_recipients", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("queue_id", String(64), ForeignKey("queue_messages.id", ondelete="CASCADE"),
           nullable=False),
    Column("address", Text, nullable=False),
    Column("domain", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_reply", Text, nullable=False, default=""),
    Column("notify", String(64), nullable=False, default=""),  # comma-separated DsnNotify
    Column("orcpt", Text, nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    # The message's priority, copied (migration 0015): the claim reads due recipients in
    # service order from this one index, without joining queue_messages.
    Column("priority", SmallInteger, nullable=False, server_default=text("1")),
    Index(None, "status", "priority", "next_attempt_at"),
    Index(None, "queue_id", "domain"),
    Index(None, "lease_owner"),
    sqlite_autoincrement=True,  # migration 0004: ids never reused
)

# ---- event log (append-only; no foreign key: events outlive the messages they describe) -----

events = Table(
    "events", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("queue_id", String(64), nullable=True),
    Column("recipient", Text, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Column("attrs", Text, nullable=False, default="{}"),  # JSON object, keys in given order
    Index(None, "queue_id"),
)

# ---- DKIM signing keys (migration 0005) ------------------------------------------------------

dkim_keys = Table(
    "dkim_keys", metadata,
    Column("domain", String(255), primary_key=True),  # lower-case A-labels
    Column("selector", String(255), primary_key=True),
    Column("key_type", String(16), nullable=False),  # k= of the key record: rsa, ed25519
    Column("private_key", Text, nullable=False),  # PKCS#8 PEM
    Column("created_at", UtcDateTime(), nullable=False),
    Column("active", Boolean, nullable=False, default=False, server_default=false()),
    Column("retired_at", UtcDateTime(), nullable=True),
)

# ---- deliverability (migration 0006) ----------------------------------------------------------

suppressions = Table(
    "suppressions", metadata,
    Column("address", String(320), primary_key=True),  # lower-cased
    Column("scope", String(255), primary_key=True, server_default=""),  # "" = every domain
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("queue_id", String(64), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "created_at"),
)

soft_bounces = Table(
    "soft_bounces", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False),
    Column("scope", String(255), nullable=False, server_default=""),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "address", "scope", "at"),
    sqlite_autoincrement=True,
)

ip_usage = Table(
    "ip_usage", metadata,
    Column("ip", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("sent", BigInteger, nullable=False, server_default="0"),
)

mta_sts_policies = Table(
    "mta_sts_policies", metadata,
    Column("domain", String(255), primary_key=True),
    Column("policy_id", String(64), nullable=False),
    Column("policy_text", Text, nullable=False),
    Column("fetched_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

tls_results = Table(
    "tls_results", metadata,
    Column("day", String(10), primary_key=True),
    Column("policy_domain", String(255), primary_key=True),
    Column("policy_type", String(32), primary_key=True),
    Column("result_type", String(64), primary_key=True),
    Column("receiving_mx", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False, server_default="0"),
)

# ---- AudienceStore (migration 0009) -----------------------------------------------------------

# JSON on SQLite (text, read with json_extract), JSONB on PostgreSQL (read with #> and #>>).
json_type = JSON().with_variant(postgresql.JSONB(), "postgresql")

contacts = Table(
    "contacts", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),  # as given, domain normalised
    Column("email_key", String(320), nullable=False, unique=True),  # lower-cased whole address
    Column("email_hash", String(80), nullable=False),  # domain.audience.email_hash(email_key)
    Column("domain", String(255), nullable=False),  # for segments' `domain = ...`
    Column("name", Text, nullable=False, server_default=""),
    Column("attributes", json_type, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Engagement, written by tracking: what "opened/clicked within N days" reads.
    Column("last_opened_at", UtcDateTime(), nullable=True),
    Column("last_clicked_at", UtcDateTime(), nullable=True),
    Index(None, "domain"),
    sqlite_autoincrement=True,  # ids never reused: keyset pagination and ledger references
)

mailing_lists = Table(
    "mailing_lists", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("opt_in", String(8), nullable=False),  # domain.audience.OptIn
    Column("created_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

memberships = Table(
    "memberships", metadata,
    Column("contact_id", big_id(), ForeignKey("contacts.id", ondelete="CASCADE"),
           primary_key=True),
    Column("list_id", Integer, ForeignKey("mailing_lists.id", ondelete="CASCADE"),
           primary_key=True),
    Column("status", String(16), nullable=False),  # domain.audience.MembershipStatus
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index(None, "list_id", "contact_id"),
)

# Append-only (no foreign keys: the evidence outlives the contact and the list it names).
consent_ledger = Table(
    "consent_ledger", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),  # email_key, or email_hash once erased
    Column("contact_id", BigInteger, nullable=True),
    Column("list_id", Integer, nullable=True),
    Column("purpose", String(200), nullable=False, server_default=""),
    Column("action", String(16), nullable=False),  # domain.audience.ConsentAction
    Column("source", String(16), nullable=False),  # domain.audience.ConsentSource
    Column("wording_version", String(64), nullable=False, server_default=""),
    Column("ip", String(64), nullable=False, server_default=""),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "email"),
    sqlite_autoincrement=True,
)

segments = Table(
    "segments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("expression", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

# ---- end of AudienceStore ---------------------------------------------------------------------

# ---- TemplateStore (migration 0010) -----------------------------------------------------------

templates = Table(
    "templates", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=True),  # NULL: the text part is made from the HTML
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

# ---- end of TemplateStore ---------------------------------------------------------------------

# ---- ApiKeyStore (migration 0011) -------------------------------------------------------------

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),  # unique among unrevoked keys (checked on insert)
    Column("prefix", String(16), nullable=False, unique=True),  # the key's public part
    Column("secret_hash", String(64), nullable=False),  # SHA-256 of the secret part, hex
    Column("scopes", Text, nullable=False),  # space-separated
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    sqlite_autoincrement=True,  # a revoked key's id is never handed to a new one
)

# ---- end of ApiKeyStore -----------------------------------------------------------------------

# ---- CampaignStore (migration 0012) -----------------------------------------------------------

campaigns = Table(
    "campaigns", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    # No foreign key to templates or segments: a template deleted later leaves the campaign's
    # history readable (the dispatcher then refuses to send it, saying why).
    Column("template_id", BigInteger, nullable=False),
    Column("segment_id", Integer, nullable=True),
    Column("from_address", String(320), nullable=False),
    Column("from_name", Text, nullable=False, server_default=""),
    Column("reply_to", String(320), nullable=True),
    Column("subject", Text, nullable=True),  # NULL: the template's subject
    Column("status", String(16), nullable=False),  # domain.campaigns.CampaignStatus
    Column("rate_per_minute", Integer, nullable=False, server_default="0"),
    Column("scheduled_at", UtcDateTime(), nullable=True),
    Column("track_opens", Boolean, nullable=False, server_default=true()),
    Column("track_clicks", Boolean, nullable=False, server_default=true()),
    Column("postal_address", Text, nullable=False, server_default=""),
    Column("pause_reason", String(16), nullable=True),  # domain.campaigns.PauseReason
    Column("pause_detail", Text, nullable=False, server_default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    # The keyset position of the audience walk: the last contact whose send row is written.
    Column("cursor", BigInteger, nullable=True),
    # Which process dispatches it (several workers or nodes poll for sending campaigns).
    Column("lease_owner", String(255), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Index(None, "status"),
    sqlite_autoincrement=True,  # ids are in sent links' tokens: never reused
)

campaign_lists = Table(
    "campaign_lists", metadata,
    Column("campaign_id", big_id(), ForeignKey("campaigns.id", ondelete="CASCADE"),
           primary_key=True),
    Column("list_id", Integer, primary_key=True),  # no FK: a deleted list's campaign stays
    Column("position", SmallInteger, nullable=False, server_default="0"),
)

campaign_sends = Table(
    "campaign_sends", metadata,
    Column("campaign_id", big_id(), ForeignKey("campaigns.id", ondelete="CASCADE"),
           primary_key=True),
    # Erasure (GDPR) removes the contact, and its send rows with it.
    Column("contact_id", big_id(), ForeignKey("contacts.id", ondelete="CASCADE"),
           primary_key=True),
    Column("email", String(320), nullable=False),
    Column("status", String(8), nullable=False),  # domain.campaigns.SendStatus
    Column("queue_id", String(64), nullable=True, unique=True),
    Column("reason", String(32), nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "campaign_id", "status"),
    Index(None, "contact_id"),
)

# ---- end of CampaignStore ---------------------------------------------------------------------

# ---- MessagingStore (migration 0013) ----------------------------------------------------------

# One row per API key and Idempotency-Key; status/body NULL while the first request runs.
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("api_key_id", Integer, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("status", SmallInteger, nullable=True),
    Column("body", Text, nullable=True),
    Column("queue_id", String(64), nullable=True),  # migration 0014: chosen at the claim
    Index(None, "created_at"),  # the 24-hour purge
)

webhooks = Table(
    "webhooks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("secret", String(100), nullable=False),
    Column("events", Text, nullable=False),  # space-separated EventKind values
    Column("active", Boolean, nullable=False, default=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("cursor", BigInteger, nullable=False, default=0),  # last event id looked at
    sqlite_autoincrement=True,
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_attempt_at", UtcDateTime(), nullable=True),
    Column("last_status_code", SmallInteger, nullable=True),
    Column("last_response", Text, nullable=False, default=""),
    UniqueConstraint("webhook_id", "event_id"),  # an event is queued once per webhook
    Index(None, "status", "next_attempt_at"),
    sqlite_autoincrement=True,
)

# ---- end of MessagingStore --------------------------------------------------------------------

ALL_TABLES = (domains, accounts, aliases, blobs, mailboxes, mailbox_messages, queue_messages,
              queue_recipients, events, dkim_keys, suppressions, soft_bounces, ip_usage,
              mta_sts_policies, tls_results,
              contacts, mailing_lists, memberships, consent_ledger, segments, api_keys,
              templates, idempotency_keys, webhooks, webhook_deliveries,
              campaigns, campaign_lists, campaign_sends)


def insert_ignoring_conflicts(dialect_name: str, table: Table, *columns: str) -> Insert:
    """INSERT ... ON CONFLICT (columns) DO NOTHING, in the backend's dialect (both spell it alike
    but SQLAlchemy builds it per dialect)."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(columns))
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(columns))
