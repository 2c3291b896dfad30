"""Issue 3's port and timer bullets, as the configuration gives them: IMAP on 2143 (STARTTLS)
and 2993 (implicit TLS), POP3 on 2110 (STLS) and 2995 (implicit TLS) by default in development;
the production ports 143/993 and 110/995 load from a config file; the autologout timers default
to the RFC minimums (RFC 9051 5.4: 30 minutes for IMAP; RFC 1939 3: 10 minutes for POP3) and a
shorter IMAP one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailprime.config import ConfigError, Role, Settings, TlsMode, load_settings


def _mailbox_listeners(settings: Settings) -> dict[str, tuple[Role, int, TlsMode]]:
    return {ls.name: (ls.role, ls.port, ls.tls) for ls in settings.listeners
            if ls.role in (Role.IMAP, Role.POP3)}


def test_development_defaults() -> None:
    settings = Settings()
    assert _mailbox_listeners(settings) == {
        "imap": (Role.IMAP, 2143, TlsMode.STARTTLS), "imaps": (Role.IMAP, 2993, TlsMode.IMPLICIT),
        "pop3": (Role.POP3, 2110, TlsMode.STARTTLS), "pop3s": (Role.POP3, 2995, TlsMode.IMPLICIT)}
    assert settings.imap.idle_timeout == 30 * 60
    assert settings.pop3.idle_timeout == 10 * 60


def test_production_ports_load_and_a_short_imap_timer_is_refused(tmp_path: Path) -> None:
    listeners = "".join(
        f'[[listeners]]\nname = "{name}"\nrole = "{role}"\nport = {port}\ntls = "{tls}"\n'
        f'address = "0.0.0.0"\n\n'
        for name, role, port, tls in (("imap", "imap", 143, "starttls"),
                                      ("imaps", "imap", 993, "implicit"),
                                      ("pop3", "pop3", 110, "starttls"),
                                      ("pop3s", "pop3", 995, "implicit")))
    config = tmp_path / "mailprime.toml"
    config.write_text(listeners)
    loaded = load_settings(config, environ={})
    assert _mailbox_listeners(loaded) == {
        "imap": (Role.IMAP, 143, TlsMode.STARTTLS), "imaps": (Role.IMAP, 993, TlsMode.IMPLICIT),
        "pop3": (Role.POP3, 110, TlsMode.STARTTLS), "pop3s": (Role.POP3, 995, TlsMode.IMPLICIT)}
    config.write_text(listeners + "[imap]\nidle_timeout = 600\n")
    with pytest.raises(ConfigError, match="1800"):
        load_settings(config, environ={})
