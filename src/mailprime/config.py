"""Typed settings from a TOML file plus MAILPRIME_* environment overrides, validated once.

Override any scalar with `MAILPRIME_<SECTION>_<KEY>`, e.g. `MAILPRIME_DELIVERY_MX_PORT=2526`
or `MAILPRIME_STORAGE_URL=postgresql://...`; lists take comma-separated values.
A wrong value raises ConfigError naming the key and, when it came from the file, its line.
"""

from __future__ import annotations

import dataclasses
import enum
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
    spool_dir: str = ""  # default: <data_dir>/spool (messages larger than inline_max)
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


@dataclass(slots=True)
class BounceSettings:
    """[bounces]: VERP return paths, bounce and complaint processing, the suppression list."""

    verp: bool = True


@dataclass(slots=True)
class ShapingSettings:
    """[shaping]: per-destination traffic shaping, IP pools and warm-up."""

    enabled: bool = True


@dataclass(slots=True)
class MtaStsSettings:
    """[mta_sts]: MTA-STS (RFC 8461) policies on delivery, REQUIRETLS, TLS reporting."""

    enabled: bool = True


@dataclass(slots=True)
class DoctorSettings:
    """[doctor]: what `mailprime doctor` checks beyond the DNS records."""

    blocklists: list[str] = field(default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net"])


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


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where)
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
        kwargs[key] = _coerce(value, hints[key], where)
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
    for ns in settings.dns.nameservers:
        _host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "53")
        if port and not port.isdigit():
            raise ConfigError(f"[dns] nameservers: bad port in {ns!r}")
