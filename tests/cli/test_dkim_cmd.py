"""`mailprime dkim`: the real command against a database made by `init`. The TXT records it prints
are the ones a verifier finds: mail signed with the stored keys verifies (dkimpy) against the
records parsed back from `dkim dns` output."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from mailprime.config import load_settings
from mailprime.domain.clock import SystemClock
from mailprime.services.dkim_keys import DkimSigner
from mailprime.storage.sql import open_store
from tests.cli.conftest import DataDir, run_many
from tests.support.dkim_verifiers import dkimpy_verify

pytestmark = pytest.mark.slow  # starts servers or runs the real command

ZONE_LINE = re.compile(r'^(\S+)\. IN TXT ((?:"[^"]*" ?)+)$')


def parse_zone(text: str) -> dict[str, str]:
    """name -> record, from zone-file lines; the record's strings joined as a resolver does."""
    records = {}
    for line in text.splitlines():
        found = ZONE_LINE.match(line)
        if found:
            strings = re.findall(r'"([^"]*)"', found.group(2))
            assert all(len(s) <= 255 for s in strings)
            records[found.group(1)] = "".join(strings)
    return records


def sign_with_stored_keys(data_dir: DataDir, message: bytes) -> bytes:
    settings = load_settings(data_dir.config, environ={})

    async def sign() -> bytes:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            return await DkimSigner(store, SystemClock()).sign(message)
        finally:
            await store.close()

    return asyncio.run(sign())


MESSAGE = b"From: Post Master <postmaster@a.test>\r\nTo: x@b.test\r\nSubject: hi\r\n\r\nHi.\r\n"


def test_keygen_dns_and_verification(data_dir: DataDir) -> None:
    made = data_dir.cli("dkim", "keygen", "A.test")
    assert made.code == 0, made.err
    assert "rsa key mp" in made.text and "ed25519 key mp" in made.text and "active" in made.text
    printed = parse_zone(made.out)
    assert len(printed) == 2
    rsa_name = next(n for n, r in printed.items() if "k=rsa" in r)
    assert re.fullmatch(r"mp\d{6}-rsa\._domainkey\.a\.test", rsa_name)

    dns = data_dir.cli("dkim", "dns", "a.test")
    assert dns.code == 0 and parse_zone(dns.out) == printed

    signed = sign_with_stored_keys(data_dir, MESSAGE)
    assert [v.result for v in dkimpy_verify(signed, printed)] == ["pass", "pass"]


def test_rotation(data_dir: DataDir) -> None:
    assert data_dir.cli("dkim", "keygen", "a.test", "-a", "rsa", "-s", "one").code == 0
    waiting = data_dir.cli("dkim", "keygen", "a.test", "--algorithm", "rsa", "--selector", "two")
    assert waiting.code == 0
    assert "not signing yet" in waiting.text and "mailprime dkim activate a.test two" in waiting.text

    refused, listed = data_dir.cli_many(["dkim", "retire", "a.test", "one"], ["dkim", "list"])
    assert refused.code == 1 and "activate another rsa key first" in refused.text
    assert re.search(r"one\s+.*rsa\s+.*active", listed.out)
    assert re.search(r"two\s+.*rsa\s+.*published", listed.out)

    activated = data_dir.cli("dkim", "activate", "a.test", "two")
    assert activated.code == 0 and "two of a.test is active" in activated.text
    assert "one stays published" in activated.text
    # The replaced key is still published until retired: mail it signed keeps verifying.
    assert set(parse_zone(data_dir.cli("dkim", "dns").out)) == {
        "one._domainkey.a.test", "two._domainkey.a.test"}
    signed = sign_with_stored_keys(data_dir, MESSAGE)
    assert b"s=two;" in signed

    retired = data_dir.cli("dkim", "retire", "a.test", "one")
    assert retired.code == 0 and "remove the TXT record one._domainkey.a.test" in retired.text
    assert set(parse_zone(data_dir.cli("dkim", "dns", "a.test").out)) == {"two._domainkey.a.test"}


def test_errors_say_why(data_dir: DataDir) -> None:
    no_alg, bad_alg, bad_domain, no_keys, missing, bad_selector = data_dir.cli_many(
        ["dkim", "keygen", "a.test", "--selector", "x"],
        ["dkim", "keygen", "a.test", "--algorithm", "dsa"],
        ["dkim", "keygen", "not a domain"],
        ["dkim", "dns", "a.test"],
        ["dkim", "activate", "a.test", "nope"],
        ["dkim", "keygen", "a.test", "-a", "ed25519", "-s", "under_score"],
    )
    assert no_alg.code == 2 and "give --algorithm" in no_alg.text
    assert bad_alg.code == 2 and "choose rsa or ed25519" in bad_alg.text
    assert bad_domain.code == 2 and "error:" in bad_domain.text
    assert no_keys.code == 1 and "no DKIM keys for a.test" in no_keys.text
    assert missing.code == 1 and "no DKIM key nope for a.test" in missing.text
    assert bad_selector.code == 1 and "not a selector" in bad_selector.text


def test_help(tmp_path: Path) -> None:
    helps = run_many([["dkim", "--help"], ["dkim", "keygen", "--help"], ["dkim", "dns", "--help"],
                      ["dkim", "list", "--help"], ["dkim", "activate", "--help"],
                      ["dkim", "retire", "--help"]], cwd=tmp_path)
    assert all(h.code == 0 and "Usage:" in h.out for h in helps), helps
