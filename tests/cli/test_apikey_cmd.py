"""`mailprime apikey create|list|revoke`, and what `init` now writes for the HTTP listener."""

from __future__ import annotations

import asyncio
import re
import stat

import pytest

from mailprime.config import load_settings
from mailprime.domain.api_keys import hash_secret, parse_api_key
from mailprime.storage.sql import open_store
from tests.cli.conftest import DataDir

pytestmark = pytest.mark.slow  # runs the real command

KEY_LINE = re.compile(r"key: (mp_\S+)\s+\(shown once\)")


def stored_hash(data_dir: DataDir, prefix: str) -> str | None:
    settings = load_settings(data_dir.config, environ={})

    async def read() -> str | None:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            key = await store.find_api_key(prefix)
        finally:
            await store.close()
        return key.secret_hash if key else None

    return asyncio.run(read())


def test_create_list_revoke(data_dir: DataDir) -> None:
    made = data_dir.cli("apikey", "create", "deploy", "--scope", "suppressions:read",
                        "--scope", "contacts:*,lists:read")
    assert made.code == 0, made.err
    (text,) = KEY_LINE.findall(made.out)
    assert made.out.count(text) == 1
    prefix, secret = parse_api_key(text) or ("", "")
    assert prefix and stored_hash(data_dir, prefix) == hash_secret(secret)
    assert secret not in (data_dir.root / "mailprime.toml").read_text()

    listed, duplicate = data_dir.cli_many(["apikey", "list"],
                                          ["apikey", "create", "deploy", "--scope", "*"])
    assert listed.code == 0 and "deploy" in listed.out and prefix in listed.out
    assert "contacts:* lists:read suppressions:read" in listed.text and "never" in listed.out
    assert secret not in listed.out
    assert duplicate.code == 1 and "exists" in duplicate.text

    revoked = data_dir.cli("apikey", "revoke", prefix)
    assert revoked.code == 0 and "revoked API key deploy" in revoked.text
    active, everything, again = data_dir.cli_many(
        ["apikey", "list"], ["apikey", "list", "--all"], ["apikey", "revoke", "deploy"])
    assert "deploy" not in active.out and "deploy" in everything.out
    assert again.code == 1 and "no unrevoked API key" in again.text


def test_bad_scopes_and_names_are_refused(data_dir: DataDir) -> None:
    cases = ((["x", "--scope", "contact:read"], "not one of"),
             (["x", "--scope", "contacts:delete"], "has the actions"),
             (["bad name", "--scope", "*"], "key name"))
    results = data_dir.cli_many(*(["apikey", "create", *args] for args, _ in cases))
    for (_, words), got in zip(cases, results, strict=True):
        assert got.code == 2 and words in got.text, got.text
    assert data_dir.cli("apikey", "list").text.endswith("0 key(s)")


def test_init_turns_http_on_with_a_link_key(data_dir: DataDir) -> None:
    settings = load_settings(data_dir.config, environ={})
    assert settings.http.enabled and settings.http.port == 8025
    assert settings.http.base_url == "http://mail.a.test:8025"
    key_file = data_dir.root / "links.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "link key" in data_dir.init_output.out
