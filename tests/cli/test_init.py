"""`mailprime init`: the files it makes, the password it prints once, and --force."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailprime.config import Role, TlsMode, load_settings
from tests.cli.conftest import DataDir, init_data_dir, password_ok, printed_password, run_cli

pytestmark = pytest.mark.slow  # starts servers or runs the real command


def test_init_creates_config_database_certificate_and_postmaster(data_dir: DataDir) -> None:
    root = data_dir.root
    for name in ("mailprime.toml", "mailprime.db", "tls/cert.pem", "tls/key.pem"):
        assert (root / name).is_file(), name
    assert stat.S_IMODE((root / "tls/key.pem").stat().st_mode) == 0o600  # the key is private
    settings = load_settings(data_dir.config, environ={})
    assert settings.server.hostname == "mail.a.test"
    assert settings.data_path == root.resolve()
    assert [(lst.role, lst.tls) for lst in settings.listeners] == [
        (Role.MX, TlsMode.STARTTLS), (Role.SUBMISSION, TlsMode.STARTTLS),
        (Role.SUBMISSION, TlsMode.IMPLICIT), (Role.IMAP, TlsMode.STARTTLS),
        (Role.IMAP, TlsMode.IMPLICIT), (Role.POP3, TlsMode.STARTTLS), (Role.POP3, TlsMode.IMPLICIT)]
    assert "BEGIN CERTIFICATE" in (root / "tls/cert.pem").read_text()

    # The password is printed exactly once, and it is the one stored (hashed) for postmaster.
    assert data_dir.init_output.out.count(data_dir.password) == 1
    assert len(data_dir.password) >= 16
    assert password_ok(data_dir.config, "postmaster@a.test", data_dir.password)
    assert not password_ok(data_dir.config, "postmaster@a.test", data_dir.password + "x")
    assert data_dir.password not in (root / "mailprime.toml").read_text()

    listed = data_dir.cli("domain", "list")
    assert listed.code == 0 and "a.test" in listed.out
    accounts = data_dir.cli("account", "list")
    assert accounts.code == 0 and "postmaster@a.test" in accounts.out


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = init_data_dir(tmp_path)
    before = first.config.read_bytes()

    again = run_cli("init", "--dir", str(first.root), "--domain", "a.test", cwd=tmp_path)
    assert again.code == 1
    assert "already exists" in again.text and "--force" in again.text
    assert "password" not in again.out
    assert first.config.read_bytes() == before
    assert password_ok(first.config, "postmaster@a.test", first.password)

    forced = run_cli("init", "--dir", str(first.root), "--domain", "b.test", "--force",
                     cwd=tmp_path)
    assert forced.code == 0, forced.err
    new_password = printed_password(forced)
    assert new_password != first.password
    # --force starts over: a new database with the new domain and postmaster only.
    assert password_ok(first.config, "postmaster@b.test", new_password)
    assert not password_ok(first.config, "postmaster@a.test", first.password)


def test_init_rejects_a_bad_domain(tmp_path: Path) -> None:
    result = run_cli("init", "--dir", str(tmp_path / "var"), "--domain", "not a domain",
                     cwd=tmp_path)
    assert result.code == 2
    assert "--domain" in result.text
    assert not (tmp_path / "var" / "mailprime.toml").exists()
