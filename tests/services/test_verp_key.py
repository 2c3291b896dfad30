"""The VERP key file (created once, atomically, private) and the [bounces] settings checks."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailprime.config import load_settings
from mailprime.domain.errors import ConfigError
from mailprime.services.verp_key import ensure_secret_file, load_or_create, read_secrets


def test_created_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "verp.key"
    (key,) = load_or_create(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path) == [key]  # a restart keeps it
    assert not ensure_secret_file(path)


def test_racing_processes_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "verp.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(lambda _: ensure_secret_file(path), range(16)))
    assert created.count(True) == 1
    assert len(read_secrets(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["verp.key"]  # no temporary file left


def test_rotation_keeps_older_keys_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "verp.key"
    path.write_text("# rotated 2030-01-01\n" + "11" * 32 + "\n\n" + "22" * 32 + "\n")
    assert read_secrets(path) == [bytes([0x11]) * 32, bytes([0x22]) * 32]
    path.write_text("zz\n")
    with pytest.raises(ConfigError, match="line 1: not a hex key"):
        read_secrets(path)
    path.write_text("abcd\n")
    with pytest.raises(ConfigError, match="at least 16 octets"):
        read_secrets(path)
    path.write_text("\n")
    with pytest.raises(ConfigError, match="no key"):
        read_secrets(path)


@pytest.mark.parametrize(("line", "message"), [
    ('verp_prefix = "x-very-long-prefix"', "verp_prefix"),
    ('verp_prefix = "a+b"', "verp_prefix"),
    ('scope = "account"', "scope"),
    ('complaints = "ignore"', "complaints"),
    ("soft_bounce_days = 0", "soft_bounce_days"),
    ('hard_reasons = ["user_unknown", "typo"]', "hard_reasons"),
    ('feedback_id_sender = "a:b"', "feedback_id"),
    ("verp_max_age_days = 0", "verp_max_age_days"),
    ("verp_max_age_days = 3651", "verp_max_age_days"),
])
def test_bad_bounce_settings_are_refused(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "mailprime.toml"
    config.write_text(f"[bounces]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_bounce_settings_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "mailprime.toml"
    config.write_text('[bounces]\nscope = "domain"\nfbl_addresses = ["fbl", "abuse@a.test"]\n')
    settings = load_settings(config, environ={"MAILPRIME_BOUNCES_SOFT_BOUNCE_LIMIT": "5"})
    b = settings.bounces
    assert (b.scope, b.fbl_addresses, b.soft_bounce_limit) == ("domain", ["fbl", "abuse@a.test"], 5)
    assert b.secret_path(settings.data_path) == settings.data_path / "verp.key"
    with pytest.raises(ConfigError, match="scope"):
        load_settings(config, environ={"MAILPRIME_BOUNCES_SCOPE": "nope"})
