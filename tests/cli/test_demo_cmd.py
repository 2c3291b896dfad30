"""`mailprime demo`: the real command, run twice on a data directory of its own with a few
hundred contacts (the counts, the printed paths, a captured message that is a DKIM-signed
campaign message), and refused on a configuration that is not in sandbox mode."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from pathlib import Path

import pytest

from mailprime.config import load_settings
from mailprime.domain.clock import SystemClock
from mailprime.services.dkim_keys import DkimKeys
from mailprime.storage.sql import open_store
from tests.cli.conftest import DataDir, Result, run_cli
from tests.support.dkim_verifiers import dkimpy_verify

pytestmark = pytest.mark.slow  # runs the real command, which runs the runtime

CONTACTS = 120
LEFT_OUT = 3  # unconfirmed, unsubscribed and suppressed: 3 each
SENT = CONTACTS - 3 * LEFT_OUT


def row(result: Result, label: str) -> int:
    """The count on the table row `label` (Rich draws the table; a row is one line)."""
    found = re.search(rf"│\s*{re.escape(label)}\s*│\s*([\d,]+)\s*│", result.out)
    assert found, f"no row {label!r} in:\n{result.out}"
    return int(found.group(1).replace(",", ""))


def printed_path(result: Result, label: str) -> Path:
    found = re.search(rf"^\s*{re.escape(label)}\s+(\S+)", result.out, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{result.out}"
    return Path(found.group(1))


def dkim_records(config: Path, domain: str) -> dict[str, str]:
    settings = load_settings(config, environ={})

    async def read() -> dict[str, str]:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            return {r.name: r.record for r in await DkimKeys(store, SystemClock()).records(domain)}
        finally:
            await store.close()

    return asyncio.run(read())


def check_counts(result: Result) -> None:
    assert result.code == 0, result.out + result.err
    assert row(result, "on the list demo") == CONTACTS
    for reason in ("unconfirmed (double opt-in not done)", "unsubscribed",
                   "suppressed (bounced or complained)"):
        assert row(result, f"left out: {reason}") == LEFT_OUT
    assert row(result, "sent (queued)") == SENT
    assert row(result, "skipped when sending") == 0
    assert row(result, "delivered into the sandbox") == SENT


def test_demo_sends_a_campaign_into_the_sandbox_and_runs_again(tmp_path: Path) -> None:
    first = run_cli("demo", "--dir", "demo", "--contacts", str(CONTACTS), cwd=tmp_path,
                    timeout=240)
    check_counts(first)
    assert "campaign demo-1" in first.out and "sandbox   on" in first.out
    assert "password:" in first.out  # init's output: the postmaster reads the Sandbox over IMAP
    data = printed_path(first, "data directory")
    config = printed_path(first, "configuration")
    sample = printed_path(first, "one message")
    assert data == (tmp_path / "demo").resolve() and data.is_dir()
    assert (tmp_path / config).is_file() and sample.is_file()
    assert f"mailprime campaign show demo-1 --config {config}" in first.out
    assert "make run DATA=demo" in first.out and "/api/v1/docs" in first.out

    # The message file: a campaign message as the sandbox captured it, DKIM-signed (both keys,
    # verified by dkimpy with the published records), with the RFC 8058 headers.
    content = sample.read_bytes()
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert message["X-Mailprime-Sandbox"].startswith("captured")
    assert message["From"] == "mailprime demo <news@example.test>"
    to = message["To"].addresses[0]
    assert to.domain in ("example.com", "example.net", "example.org")
    first_name = to.display_name.split()[0]
    assert message["Subject"].startswith(f"{first_name}, what's new in ")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<https://mail.example.test/")
    assert message["List-Id"].endswith("<demo-1.example.test>")
    verdicts = dkimpy_verify(content, dkim_records(tmp_path / config, "example.test"))
    assert [v.result for v in verdicts] == ["pass", "pass"], verdicts
    text = message.get_body(("plain",))
    assert text is not None and "mailprime demo, 1 Example Street" in text.get_content()

    # Again: the list and the template are reused, a second campaign goes to the same people.
    second = run_cli("demo", "--dir", "demo", cwd=tmp_path, timeout=240)
    check_counts(second)
    assert "reusing demo/mailprime.toml" in second.text and "list reusing demo" in second.text
    assert "campaign demo-2" in second.out and "password:" not in second.out
    assert printed_path(second, "one message").name == "demo-2.eml"


def test_demo_refuses_a_configuration_that_is_not_in_sandbox_mode(data_dir: DataDir) -> None:
    refused, both, usage = run_cli("demo", "--config", str(data_dir.config), cwd=data_dir.root), \
        run_cli("demo", "--config", "x.toml", "--dir", "y", cwd=data_dir.root), \
        run_cli("demo", "--help", cwd=data_dir.root)
    assert refused.code == 2 and "not in sandbox mode" in refused.text, refused.text
    assert "never mail real people" in refused.text
    assert both.code == 2 and "not both" in both.text
    assert usage.code == 0 and "--contacts" in usage.text and "sandbox" in usage.text
