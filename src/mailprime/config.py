"""Typed settings from a TOML file plus MAILPRIME_* environment overrides, validated once.

Override any scalar with `MAILPRIME_<SECTION>_<KEY>`, e.g. `MAILPRIME_DELIVERY_MX_PORT=2526`
or `MAILPRIME_STORAGE_URL=postgresql://...`; lists take comma-separated values.
A wrong value raises ConfigError naming the key and, when it came from the file, its line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailprime.domain.errors import ConfigError


class Role(enum.StrEnum):
    MX = "mx"  # port 25: mail for local domains only, never a relay
    SUBMISSION = "submission"  # 587/465: authenticated clients send anywhere
    POP3 = "pop3"  # 110/995: POP3 access to each account's INBOX (RFC 1939)
    IMAP = "imap"  # 143/993: IMAP4rev1 + IMAP4rev2 access to every mailbox (RFC 3501, RFC 9051)


class TlsMode(enum.StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclass(slots=True)
class ServerSettings:
    hostname: str = "localhost"
    data_dir: str = "."
    # Directory look-ups (domains, accounts, aliases) are cached this long; changes made by
    # another process (the CLI) are seen within it.
    directory_cache_seconds: float = 2.0
    workers: int = 1  # worker processes sharing the listeners with SO_REUSEPORT (0: one per core)


@dataclass(slots=True)
class StorageSettings:
    url: str = ""  # default: sqlite:///<data_dir>/mailprime.db
    spool_dir: str = ""  # default: <data_dir>/spool (messages over inline_max; campaign batches)
    inline_max: int = 1024 * 1024  # messages up to this size are stored in the database itself


@dataclass(slots=True)
class ListenerSettings:
    name: str = "mx"
    role: Role = Role.MX
    address: str = "127.0.0.1"
    port: int = 2525
    tls: TlsMode = TlsMode.STARTTLS
    # AUTH over an unencrypted channel is refused (RFC 4954 4) unless this is set AND the
    # listener is bound to a loopback address.
    allow_plaintext_auth_on_loopback: bool = False


@dataclass(slots=True)
class TlsSettings:
    cert: str = ""  # PEM certificate chain; default <data_dir>/tls/cert.pem
    key: str = ""  # PEM private key; default <data_dir>/tls/key.pem


@dataclass(slots=True)
class DnsSettings:
    nameservers: list[str] = field(default_factory=list)  # "ip" or "ip:port"; empty: system
    timeout: float = 5.0


@dataclass(slots=True)
class DeliverySettings:
    mx_port: int = 25
    sandbox: bool = False  # deliver every outbound message to the local capture mailbox
    sandbox_mailbox: str = ""  # default: postmaster@<first local domain>, folder "Sandbox"
    concurrency: int = 50  # deliveries in flight per process
    per_destination_connections: int = 10
    retry_first: int = 300  # seconds until the first retry
    retry_factor: float = 2.0
    retry_max_interval: int = 4 * 3600
    max_queue_lifetime: int = 5 * 86400  # then the message expires with a DSN
    # Seconds in the queue after which a deferred recipient gets a "delayed" DSN (RFC 3461 5.2.5),
    # like Postfix's delay_warning_time; 0: only for NOTIFY=DELAY, at the first deferral.
    delay_warning: float = 4 * 3600
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2 gives 5 min for most replies
    helo_name: str = ""  # default: server.hostname
    poll_interval: float = 1.0
    require_tls: bool = False


@dataclass(slots=True)
class SubmissionSettings:
    # "own": an account may use only its own address (or an alias pointing to it) as sender.
    # "any": any sender (a trusted application).
    sender_policy: str = "own"


@dataclass(slots=True)
class LimitSettings:
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000
    idle_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: server timeout 5 minutes
    data_timeout: float = 600.0  # per block of DATA (RFC 5321 4.5.3.2.5 asks 3 min of clients)
    max_connections_per_ip: int = 50
    max_connections: int = 1000


@dataclass(slots=True)
class Pop3Settings:
    idle_timeout: float = 600.0  # RFC 1939 3: the autologout timer is at least 10 minutes
    max_auth_failures: int = 3  # failed logins in one connection, then it is closed
    auth_failure_delay: float = 1.0  # seconds before answering a failed login; doubles each time


@dataclass(slots=True)
class ImapSettings:
    idle_timeout: float = 1800.0  # RFC 9051 5.4: the autologout timer is at least 30 minutes
    max_sessions_per_account: int = 20  # authenticated sessions per account and process (0: no cap)
    max_connections_per_ip: int = 20  # then the greeting is * BYE
    quota_bytes: int = 0  # RFC 9208 STORAGE per account, octets; 0: unlimited
    quota_messages: int = 0  # RFC 9208 MESSAGE per account; 0: unlimited
    max_auth_failures: int = 3  # failed logins in one connection, then * BYE
    auth_failure_delay: float = 1.0  # seconds before answering a failed login; doubles each time
    idle_poll: float = 1.5  # seconds between checks for other processes' changes while IDLE


@dataclass(slots=True)
class AuthenticationSettings:
    """[authentication]: SPF, DKIM, DMARC and ARC verification of mail the MX receives."""

    verify: bool = True
    authserv_id: str = ""  # the Authentication-Results authserv-id; default: server.hostname
    # What a DMARC failure under p=reject / p=quarantine (after pct sampling) does to the message
    # (RFC 7489 6.7 leaves the final action to the receiver): "reject" = 550 5.7.1 to DATA,
    # "junk" = file the local deliveries into the account's \Junk mailbox, "none" = deliver.
    dmarc_reject_action: str = "reject"
    dmarc_quarantine_action: str = "junk"
    junk_mailbox: str = "Junk"  # used when the account has no mailbox marked \Junk (RFC 6154)
    # The verification look-ups' own DNS cache: entries, and the most seconds any answer (or
    # NXDOMAIN/NODATA, RFC 2308) is kept whatever its TTL says.
    dns_cache_size: int = 8192
    dns_max_ttl: int = 3600
    # In front of that cache, answers are also memoised this many seconds whatever their TTL:
    # it spares the DNS library's per-look-up work when every message asks the same names.
    dns_memo_seconds: float = 5.0
    # Optional spam scoring by rspamd's normal worker (POST /checkv2), e.g. "http://127.0.0.1:11333".
    rspamd_url: str = ""
    rspamd_timeout: float = 10.0  # seconds for the whole request
    rspamd_fail_open: bool = True  # rspamd unreachable: accept (true) or answer 451 4.7.1 (false)
    # rspamd "add header" / "rewrite subject": "junk" files into \Junk; "none" only records it.
    rspamd_junk_action: str = "junk"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises ConfigError for a value outside its set (also run again after env overrides)."""
        for key, allowed in (("dmarc_reject_action", ("reject", "junk", "none")),
                             ("dmarc_quarantine_action", ("junk", "reject", "none")),
                             ("rspamd_junk_action", ("junk", "none"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"[authentication] {key}: {getattr(self, key)!r} is not one of "
                                  + ", ".join(repr(a) for a in allowed))
        if min(self.dns_cache_size, self.dns_max_ttl, self.dns_memo_seconds) < 0 or \
                self.rspamd_timeout <= 0:
            raise ConfigError("[authentication] dns_cache_size, dns_max_ttl and dns_memo_seconds "
                              "must not be negative, rspamd_timeout must be positive")
        if self.rspamd_url and not self.rspamd_url.startswith("http://"):
            raise ConfigError("[authentication] rspamd_url: must be http://host:port (rspamd's "
                              "normal worker speaks plain HTTP; keep it on a trusted network)")
        if not self.junk_mailbox.strip():
            raise ConfigError("[authentication] junk_mailbox: must not be empty")


@dataclass(slots=True)
class BounceSettings:
    """[bounces]: VERP return paths, bounce and complaint processing, the suppression list."""

    # Each remote recipient of mail from one of our domains gets its own signed envelope sender
    # `<verp_prefix>+<token>@<verp_domain>` (message.verp); the MX maps bounces back through it.
    verp: bool = True
    verp_prefix: str = "bounces"  # 1-15 characters: the token takes 48 of the 64 (RFC 5321)
    verp_domain: str = ""  # a local domain that receives the bounces; default: the sender's
    verp_secret_file: str = ""  # default <data_dir>/verp.key (32 random octets, mode 0600)
    # A VERP token older than this many days (it carries its issue day) is refused at RCPT
    # (550 5.1.1): a bounce comes within the sender's retry period, an FBL report within hours.
    verp_max_age_days: int = 30
    # "global": a suppression stops mail from every sending domain; "domain": only from the
    # sending domain (the envelope sender's) whose mail bounced or was complained about.
    scope: str = "global"
    # Hard bounces with these reasons (message.bounce_reason) suppress the address; policy and
    # authentication blocks are about the sender, not the address, and do not.
    hard_reasons: list[str] = field(default_factory=lambda: ["user_unknown", "domain_not_found"])
    soft_bounce_limit: int = 3  # this many soft bounces (one per message) within ...
    soft_bounce_days: int = 7  # ... this many days suppress the address; limit 0: never
    complaints: str = "suppress"  # "suppress" or "record" (an event only)
    # Addresses whose mail is feedback-loop reports (ARF, RFC 5965): a full address, or a local
    # part ("fbl") meaning that local part at every local domain.
    fbl_addresses: list[str] = field(default_factory=lambda: ["fbl"])
    submission_gate: bool = True  # refuse suppressed recipients at RCPT on submission (550 5.7.1)
    # Feedback-ID (Gmail's feedback loop, "CampaignId:CustomerId:MailType:SenderId") on submitted
    # mail that leaves; empty sender id: the header is not added.
    feedback_id_sender: str = "mailprime"
    feedback_id_type: str = "transactional"  # MailType unless the client sets X-Mailprime-Type
    feedback_id_campaign: str = "default"  # CampaignId unless the client sets X-Campaign-ID

    def secret_path(self, data_path: Path) -> Path:
        return Path(self.verp_secret_file) if self.verp_secret_file else data_path / "verp.key"

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work (called by `validate`)."""
        if not 1 <= len(self.verp_prefix) <= 15 or "+" in self.verp_prefix or "@" in self.verp_prefix:
            raise ConfigError("[bounces] verp_prefix: 1 to 15 characters without '+' or '@' "
                              "(RFC 5321 4.5.3.1.1: the local part is at most 64 octets)")
        if not 1 <= self.verp_max_age_days <= 3650:
            raise ConfigError("[bounces] verp_max_age_days: 1 to 3650 (a token's age in days)")
        if self.scope not in ("global", "domain"):
            raise ConfigError("[bounces] scope: must be 'global' or 'domain'")
        if self.complaints not in ("suppress", "record"):
            raise ConfigError("[bounces] complaints: must be 'suppress' or 'record'")
        if self.soft_bounce_limit < 0 or self.soft_bounce_days < 1:
            raise ConfigError("[bounces] soft_bounce_limit: 0 (off) or more; soft_bounce_days: 1 or more")
        known = {"user_unknown", "mailbox_full", "domain_not_found", "policy", "auth_failure",
                 "rate_limited", "message_too_large", "network", "expired", "other"}
        for reason in self.hard_reasons:
            if reason not in known:
                raise ConfigError(f"[bounces] hard_reasons: {reason!r} is not one of "
                                  f"{', '.join(sorted(known))}")
        for value in (self.feedback_id_sender, self.feedback_id_type, self.feedback_id_campaign):
            if ":" in value or len(value) > 64:
                raise ConfigError("[bounces] feedback_id_*: at most 64 characters, no ':' "
                                  "(the Feedback-ID fields are separated by colons)")


@dataclass(slots=True)
class ProviderShaping:
    """[shaping.providers.NAME]: limits of one provider group. NAME is a built-in provider
    (google, yahoo, outlook, office365, apple, gmx, mailru, yandex, comcast, ...) whose unset
    keys keep their built-in values, a new provider (then `mx_suffixes` says which MX hosts are
    its), or the registered domain of an MX host ("example.net"), which is the group name of
    every destination not matched by a provider. Unset keys inherit from [shaping]."""

    mx_suffixes: list[str] = field(default_factory=list)  # e.g. [".mx.example.net"]
    connections: int | None = None
    messages_per_connection: int | None = None
    messages_per_minute: float | None = None  # 0: no rate limit


@dataclass(slots=True)
class IpPoolSettings:
    """[shaping.pools.NAME]: source addresses bound for mail of some senders or classes."""

    addresses: list[str] = field(default_factory=list)
    sender_domains: list[str] = field(default_factory=list)  # envelope sender domains
    priorities: list[str] = field(default_factory=list)  # "transactional", "normal", "bulk"


@dataclass(slots=True)
class WarmupSettings:
    """[shaping.warmup."ADDRESS"]: daily caps of one source address from `start` (UTC day 0):
    `caps` day by day, or `first` multiplied by `factor` each day for `days` days; after the
    schedule the address has no cap. Before `start` it is not used."""

    start: str = ""  # YYYY-MM-DD
    caps: list[int] = field(default_factory=list)
    first: int = 50
    factor: float = 0.0
    days: int = 0


@dataclass(slots=True)
class ShapingSettings:
    """[shaping]: per-destination traffic shaping, IP pools and warm-up (docs/configuration.md)."""

    enabled: bool = True  # false: no rates, back-off or warm-up; connections per MX group only
    connections: int = 0  # per group and process; 0: [delivery] per_destination_connections
    messages_per_connection: int = 100
    messages_per_minute: float = 0.0  # per group; 0: no limit (providers have their own)
    hold_seconds: float = 5.0  # a job waits this long at most for its rate slot, else deferred
    backoff_seconds: float = 60.0  # first pause after a throttling reply; doubles with repeats
    backoff_max_seconds: float = 3600.0
    recovery_percent: float = 10.0  # of the pre-throttle rate, added per quiet minute
    min_messages_per_minute: float = 1.0  # a throttled group never goes below this
    route_cache_seconds: float = 60.0  # MX look-ups reused for grouping and delivery
    usage_flush_seconds: float = 5.0  # warm-up counts written to the database this often
    default_pool: str = ""  # pool for mail no pool claims; "": the system's source address
    providers: dict[str, ProviderShaping] = field(default_factory=dict)
    pools: dict[str, IpPoolSettings] = field(default_factory=dict)
    warmup: dict[str, WarmupSettings] = field(default_factory=dict)

    def check(self) -> None:
        """Raises ConfigError for values the shaper cannot work with."""
        if min(self.connections, self.messages_per_connection - 1) < 0:
            raise ConfigError("[shaping] connections must be 0 or more, messages_per_connection 1 "
                              "or more")
        if min(self.messages_per_minute, self.hold_seconds, self.min_messages_per_minute) < 0 \
                or self.backoff_seconds <= 0 or self.backoff_max_seconds < self.backoff_seconds:
            raise ConfigError("[shaping] rates and hold_seconds must not be negative, "
                              "backoff_seconds positive and at most backoff_max_seconds")
        if not 0 < self.recovery_percent <= 100 or self.route_cache_seconds < 0 \
                or self.usage_flush_seconds <= 0:
            raise ConfigError("[shaping] recovery_percent must be in (0, 100], "
                              "route_cache_seconds not negative, usage_flush_seconds positive")
        for name, provider in self.providers.items():
            values = (provider.connections, provider.messages_per_connection)
            if any(v is not None and v < 1 for v in values) or (
                    provider.messages_per_minute is not None and provider.messages_per_minute < 0):
                raise ConfigError(f"[shaping.providers.{name}] connections and "
                                  "messages_per_connection must be at least 1, "
                                  "messages_per_minute not negative")
        classes = {"transactional", "normal", "bulk"}
        for name, pool in self.pools.items():
            if not pool.addresses:
                raise ConfigError(f"[shaping.pools.{name}] addresses: at least one is needed")
            bad = [p for p in pool.priorities if p not in classes]
            if bad:
                raise ConfigError(f"[shaping.pools.{name}] priorities: {bad[0]!r} is not one of "
                                  "'transactional', 'normal', 'bulk'")
        if self.default_pool and self.default_pool not in self.pools:
            raise ConfigError(f"[shaping] default_pool: no pool {self.default_pool!r}")
        for address, warm in self.warmup.items():
            where = f'[shaping.warmup."{address}"]'
            try:
                dt.date.fromisoformat(warm.start)
            except ValueError:
                raise ConfigError(f"{where} start: expected a date YYYY-MM-DD, "
                                  f"got {warm.start!r}") from None
            if warm.caps and (warm.factor or warm.days):
                raise ConfigError(f"{where}: give caps, or first/factor/days, not both")
            if any(c < 0 for c in warm.caps) or warm.first < 1 or (
                    not warm.caps and (warm.factor <= 1 or warm.days < 1)):
                raise ConfigError(f"{where}: caps must not be negative; without caps, first "
                                  "must be at least 1, factor above 1 and days at least 1")


@dataclass(slots=True)
class MtaStsSettings:
    """[mta_sts]: MTA-STS (RFC 8461) policies on delivery, REQUIRETLS, TLS reporting."""

    enabled: bool = True
    # PEM file of the roots that verify policy hosts and MX certificates where a policy or
    # REQUIRETLS demands it; "": the system trust store.
    ca_file: str = ""
    https_port: int = 443  # where policies are fetched (tests use another)
    fetch_timeout: float = 60.0  # RFC 8461 3.3 recommends 60 seconds
    max_policy_size: int = 64 * 1024  # octets of a policy body
    recheck_seconds: float = 300.0  # a domain's _mta-sts TXT id is asked at most this often
    retry_seconds: float = 300.0  # after a failed fetch, the next try waits this long
    tls_reports: bool = True  # count TLS results per policy domain and day (RFC 8460)
    report_flush_seconds: float = 5.0  # TLS result counts written to the database this often
    report_organization: str = ""  # RFC 8460 4.4 organization-name; default: server.hostname
    report_contact: str = ""  # RFC 8460 4.4 contact-info; default: postmaster@server.hostname
    # RFC 8689: offer REQUIRETLS on TLS sessions of the MX and submission listeners (mail
    # accepted with it is relayed only over verified TLS to hops that offer it). Independent of
    # `enabled`; "TLS-Required: No" is honoured either way.
    requiretls: bool = True

    def check(self) -> None:
        """Raises ConfigError for values MTA-STS cannot work with."""
        if not 0 < self.https_port <= 65535:
            raise ConfigError(f"[mta_sts] https_port: {self.https_port} out of range")
        if min(self.fetch_timeout, self.report_flush_seconds) <= 0 or \
                min(self.recheck_seconds, self.retry_seconds) < 0:
            raise ConfigError("[mta_sts] fetch_timeout and report_flush_seconds must be positive, "
                              "recheck_seconds and retry_seconds not negative")
        if self.max_policy_size < 1024:
            raise ConfigError("[mta_sts] max_policy_size: at least 1024 octets")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ConfigError(f"[mta_sts] ca_file: no file {self.ca_file!r}")


@dataclass(slots=True)
class DoctorSettings:
    """[doctor]: what `mailprime doctor` checks beyond the DNS records."""

    # DNS blocklist zones (RFC 5782) each sending address is looked up in. Spamhaus refuses
    # queries from public resolvers (answer 127.255.255.254): use a resolver of your own.
    blocklists: list[str] = field(default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net"])
    cert_expiry_warning_days: int = 14  # a certificate expiring sooner is a WARN


@dataclass(slots=True)
class MarketingSettings:
    """[marketing]: contacts, lists, consent, campaigns (issue 5)."""

    postal_address: str = ""  # the sender's postal address (CAN-SPAM), shown in every campaign
    # Retention (`mailprime retention run`, marketing.retention): events and finished queue
    # messages older than this many days are deleted; 0 keeps them for ever. 395 days keeps a
    # year of events for year-on-year comparison, plus a month.
    event_retention_days: int = 395
    message_retention_days: int = 30
    # How often the server runs that retention itself (marketing.retention.RetentionTask; one
    # process per node, first run a minute after start); 0: never (use the command from cron).
    retention_interval_hours: float = 24.0
    # Campaign guardrails (marketing.guardrails): once `guardrail_min_sample` messages are
    # queued, a campaign pauses itself when hard bounces / sent passes `max_hard_bounce_rate`
    # or complaints / sent passes `max_complaint_rate` (Gmail's and Yahoo's bulk-sender
    # guidance: keep complaints under 0.3 %; a list bouncing over 5 % is not a kept list).
    guardrail_min_sample: int = 200
    max_hard_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.003
    # Campaign dispatch (marketing.dispatch): contacts per batch (memory is bounded by it),
    # how often the server looks for campaigns to start or resume, and how long a process's
    # claim on a campaign lasts without renewal (after a crash, another process takes over then).
    dispatch_batch: int = 500
    dispatch_poll_seconds: float = 5.0
    dispatch_lease_seconds: float = 60.0
    # Worker processes that build and DKIM-sign campaign messages (marketing.build_pool), used
    # for batches of 100 or more: 0 one per core (none on a one-core machine) divided among the
    # [server] workers processes, -1 none (the dispatching process builds, and signs on
    # threads), N that many per server process.
    build_processes: int = 0

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work."""
        if self.guardrail_min_sample < 1:
            raise ConfigError("[marketing] guardrail_min_sample: at least 1")
        for key in ("max_hard_bounce_rate", "max_complaint_rate"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"[marketing] {key}: a fraction above 0 and at most 1 "
                                  "(0.05 is 5 %)")
        if not 1 <= self.dispatch_batch <= 10_000:
            raise ConfigError("[marketing] dispatch_batch: 1 to 10000 contacts")
        if not 0.05 <= self.dispatch_poll_seconds <= 3600:
            raise ConfigError("[marketing] dispatch_poll_seconds: 0.05 to 3600")
        if not 5 <= self.dispatch_lease_seconds <= 3600:
            raise ConfigError("[marketing] dispatch_lease_seconds: 5 to 3600")
        if not -1 <= self.build_processes <= 64:
            raise ConfigError("[marketing] build_processes: -1 (none), 0 (one per core) or 1 to 64")
        if not 0 <= self.retention_interval_hours <= 8760:
            raise ConfigError("[marketing] retention_interval_hours: 0 (off) to 8760 (a year)")


@dataclass(slots=True)
class HttpSettings:
    """[http]: the HTTP API, tracking and unsubscribe endpoints (issue 5).

    Off unless the file turns it on (`mailprime init` writes `enabled = true`): a configuration
    written before the listener existed does not open a new port after an upgrade."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 8025  # 0: any free port (ready.json says which)
    # The scheme, host (and port) links in mail point to, e.g. "https://mail.example.com"; a
    # reverse proxy with TLS normally sits in front. Default: http://<address>:<port>.
    public_url: str = ""
    max_request_size: int = 1024 * 1024  # octets of a request body; larger: 413
    track_opens: bool = True  # default for campaigns that do not say (switchable per campaign)
    track_clicks: bool = True
    token_secret_file: str = ""  # signs tracking/unsubscribe links; default <data_dir>/links.key
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's
    # forwarded_allow_ips), e.g. ["127.0.0.1"]; empty: none.
    trusted_proxies: list[str] = field(default_factory=list)
    # Networks (CIDR) of mail scanners or proxies known to the operator: opens and clicks from
    # them are recorded with machine=yes (marketing.machine_opens knows the common ones).
    machine_networks: list[str] = field(default_factory=list)

    def secret_path(self, data_path: Path) -> Path:
        return Path(self.token_secret_file) if self.token_secret_file else data_path / "links.key"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work (called by `validate`)."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"[http] port: {self.port} out of range")
        if self.public_url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", self.public_url):
            raise ConfigError("[http] public_url: an http:// or https:// URL without query, e.g. "
                              "https://mail.example.com")
        if not 1024 <= self.max_request_size <= 1024 ** 3:
            raise ConfigError("[http] max_request_size: 1024 octets to 1 GiB")
        for cidr in self.machine_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"[http] machine_networks: {cidr!r} is not a network "
                                  "(e.g. 192.0.2.0/24)") from None


@dataclass(slots=True)
class WebhookSettings:
    """[webhooks]: how events are POSTed to the webhooks made with /api/v1/webhooks (issue 5)."""

    enabled: bool = True  # the dispatcher runs (in every process; they share the work)
    poll_interval: float = 1.0  # seconds between looks at the event log
    batch: int = 200  # events looked at per webhook per look
    concurrency: int = 8  # POSTs in flight per process
    timeout: float = 10.0  # seconds for one POST, connect to answer
    retry_base: float = 60.0  # seconds before the first retry; doubled each time ...
    retry_max: float = 86400.0  # ... up to this interval (24 h)
    max_attempts: int = 12  # then the delivery is marked failed
    ca_file: str = ""  # a CA bundle trusted for https:// receivers besides the system's

    def check(self) -> None:
        if self.poll_interval <= 0 or self.timeout <= 0 or self.retry_base <= 0:
            raise ConfigError("[webhooks] poll_interval, timeout, retry_base: positive seconds")
        if self.retry_max < self.retry_base:
            raise ConfigError("[webhooks] retry_max: at least retry_base")
        if not 1 <= self.max_attempts <= 100 or not 1 <= self.concurrency <= 256 \
                or not 1 <= self.batch <= 10_000:
            raise ConfigError("[webhooks] max_attempts 1-100, concurrency 1-256, batch 1-10000")


@dataclass(slots=True)
class LogSettings:
    format: str = "text"  # or "json"
    level: str = "INFO"
    file: str = ""  # empty: standard error


def _default_listeners() -> list[ListenerSettings]:
    return [
        ListenerSettings(name="mx", role=Role.MX, port=2525, tls=TlsMode.STARTTLS),
        ListenerSettings(name="submission", role=Role.SUBMISSION, port=2587, tls=TlsMode.STARTTLS),
        ListenerSettings(name="submissions", role=Role.SUBMISSION, port=2465, tls=TlsMode.IMPLICIT),
        ListenerSettings(name="pop3", role=Role.POP3, port=2110, tls=TlsMode.STARTTLS),
        ListenerSettings(name="pop3s", role=Role.POP3, port=2995, tls=TlsMode.IMPLICIT),
        ListenerSettings(name="imap", role=Role.IMAP, port=2143, tls=TlsMode.STARTTLS),
        ListenerSettings(name="imaps", role=Role.IMAP, port=2993, tls=TlsMode.IMPLICIT),
    ]


@dataclass(slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    listeners: list[ListenerSettings] = field(default_factory=_default_listeners)
    tls: TlsSettings = field(default_factory=TlsSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    pop3: Pop3Settings = field(default_factory=Pop3Settings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    shaping: ShapingSettings = field(default_factory=ShapingSettings)
    mta_sts: MtaStsSettings = field(default_factory=MtaStsSettings)
    doctor: DoctorSettings = field(default_factory=DoctorSettings)
    marketing: MarketingSettings = field(default_factory=MarketingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    log: LogSettings = field(default_factory=LogSettings)
    config_path: str = ""

    # Resolved paths -------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        base = Path(self.config_path).parent if self.config_path else Path.cwd()
        return (base / self.server.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.data_path / 'mailprime.db'}"

    @property
    def spool_path(self) -> Path:
        return Path(self.storage.spool_dir) if self.storage.spool_dir else self.data_path / "spool"

    @property
    def cert_path(self) -> Path:
        return Path(self.tls.cert) if self.tls.cert else self.data_path / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.tls.key) if self.tls.key else self.data_path / "tls" / "key.pem"

    @property
    def helo_name(self) -> str:
        return self.delivery.helo_name or self.server.hostname


# Loading ------------------------------------------------------------------------------------

def _line_of(text: str, section: str, key: str) -> int | None:
    """Best effort: the line where `key` is set inside `[section]` (for error messages)."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", stripped)
        if m:
            current = m.group(1)
            continue
        if current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _table_name(section: str, key: str) -> str:
    """"shaping.providers.google", or 'shaping.warmup."192.0.2.1"' for a key TOML must quote."""
    return f"{section}.{key}" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'{section}."{key}"'


def _coerce(value: Any, tp: Any, where: str, *, section: str = "", text: str = "") -> Any:
    """`section` and `text` name a table-of-tables field's own tables in error messages."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where, section=section, text=text)
    if origin is dict:  # a table of tables ([shaping.pools.NAME]) or of values
        _key_type, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {str(k): _coerce(v, inner, f"[{_table_name(section, str(k))}]",
                                section=_table_name(section, str(k)), text=text)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return _build_section(tp, value, section, text)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


def _build_section(cls: Any, raw: dict[str, Any], section: str, text: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        line = _line_of(text, section, key)
        where = f"[{section}] {key}" + (f" (line {line})" if line else "")
        if key not in known:
            raise ConfigError(f"{where}: unknown setting; known: {', '.join(sorted(known))}")
        kwargs[key] = _coerce(value, hints[key], where, section=f"{section}.{key}", text=text)
    return cls(**kwargs)


_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "storage": StorageSettings,
    "tls": TlsSettings,
    "dns": DnsSettings,
    "delivery": DeliverySettings,
    "submission": SubmissionSettings,
    "limits": LimitSettings,
    "pop3": Pop3Settings,
    "imap": ImapSettings,
    "authentication": AuthenticationSettings,
    "bounces": BounceSettings,
    "shaping": ShapingSettings,
    "mta_sts": MtaStsSettings,
    "doctor": DoctorSettings,
    "marketing": MarketingSettings,
    "http": HttpSettings,
    "webhooks": WebhookSettings,
    "log": LogSettings,
}


def _apply_env(settings: Settings, environ: typing.Mapping[str, str]) -> None:
    for name, cls in _SECTIONS.items():
        section = getattr(settings, name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            var = f"MAILPRIME_{name.upper()}_{f.name.upper()}"
            if var in environ:
                setattr(section, f.name, _coerce(environ[var], hints[f.name], var))


def load_settings(path: str | Path | None, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Reads `path` (if given), applies the environment, validates, and returns Settings."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    text = ""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    settings = Settings(config_path=str(Path(path).resolve()) if path is not None else "")
    for key, value in raw.items():
        if key == "listeners":
            if not isinstance(value, list):
                raise ConfigError("[[listeners]]: expected an array of tables")
            settings.listeners = [
                _build_section(ListenerSettings, item, "listeners", text) for item in value
            ]
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}]: expected a table")
            setattr(settings, key, _build_section(_SECTIONS[key], value, key, text))
        else:
            line = next((n for n, ln in enumerate(text.splitlines(), 1)
                         if re.match(rf"^\s*\[?\[?\s*{re.escape(key)}\b", ln)), None)
            where = f"{key}" + (f" (line {line})" if line else "")
            known = ", ".join(sorted([*_SECTIONS, "listeners"]))
            raise ConfigError(f"{where}: unknown section; known: {known}")
    _apply_env(settings, env)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    names = [lst.name for lst in settings.listeners]
    if len(names) != len(set(names)):
        raise ConfigError("[[listeners]] name: listener names must be unique")
    for lst in settings.listeners:
        if not 0 <= lst.port <= 65535:
            raise ConfigError(f"[[listeners]] {lst.name}: port {lst.port} out of range")
    if settings.log.format not in ("text", "json"):
        raise ConfigError(f"[log] format: {settings.log.format!r} is not 'text' or 'json'")
    settings.shaping.check()
    if settings.submission.sender_policy not in ("own", "any"):
        raise ConfigError("[submission] sender_policy: must be 'own' or 'any'")
    if settings.delivery.delay_warning < 0:
        raise ConfigError("[delivery] delay_warning: must be 0 (off) or a number of seconds")
    if settings.delivery.retry_factor < 1:
        raise ConfigError("[delivery] retry_factor: must be at least 1")
    if settings.limits.max_recipients < 100:
        raise ConfigError("[limits] max_recipients: RFC 5321 4.5.3.1.8 requires at least 100")
    if settings.pop3.idle_timeout < 600:
        raise ConfigError("[pop3] idle_timeout: RFC 1939 3 requires at least 600 seconds")
    if settings.pop3.max_auth_failures < 1 or settings.pop3.auth_failure_delay < 0:
        raise ConfigError("[pop3] max_auth_failures must be at least 1, auth_failure_delay not negative")
    imap = settings.imap
    if imap.idle_timeout < 1800:
        raise ConfigError("[imap] idle_timeout: RFC 9051 5.4 requires at least 1800 seconds")
    if imap.max_auth_failures < 1 or imap.auth_failure_delay < 0 or imap.idle_poll <= 0:
        raise ConfigError("[imap] max_auth_failures must be at least 1, auth_failure_delay not "
                          "negative, idle_poll positive")
    if min(imap.quota_bytes, imap.quota_messages, imap.max_sessions_per_account) < 0:
        raise ConfigError("[imap] quota_bytes, quota_messages, max_sessions_per_account: 0 or more")
    settings.bounces.check()
    settings.mta_sts.check()
    settings.http.check()
    settings.marketing.check()
    for ns in settings.dns.nameservers:
        _host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "53")
        if port and not port.isdigit():
            raise ConfigError(f"[dns] nameservers: bad port in {ns!r}")
