"""`mailprime campaign create|list|show|preflight|test|start|pause|resume|cancel|stats`: the
real command against a database made by `init`, its audience, template and DKIM keys seeded
through the store."""

from __future__ import annotations

import asyncio

import pytest

from mailprime.config import load_settings
from mailprime.storage.sql import open_store
from tests.cli.conftest import DataDir
from tests.marketing.campaign_fixtures import seed

pytestmark = pytest.mark.slow  # runs the real command


def seeded(data_dir: DataDir) -> str:
    """https links and a postal address in the config; 5 contacts, a template, keys and the
    campaign "April news" in the store. Returns the list's name."""
    text = data_dir.config.read_text(encoding="utf-8")
    data_dir.config.write_text(
        text.replace('public_url = "http://mail.a.test:8025"', 'public_url = "https://mail.a.test"')
        + '\n[marketing]\npostal_address = "Example Ltd, 1 Main Street, Springfield"\n',
        encoding="utf-8")
    settings = load_settings(data_dir.config, environ={})

    async def main() -> str:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            done = await seed(store, confirmed=5)
        finally:
            await store.close()
        return f"news-{done.campaign.name}"

    return asyncio.run(main())


def test_create_check_test_and_move_through_the_states(data_dir: DataDir) -> None:
    news = seeded(data_dir)
    made, stray = data_dir.cli_many(
        ["campaign", "create", "may", "--template", "news", "--list", news, "--from",
         "news@a.test", "--from-name", "A News", "--rate", "60"],
        ["campaign", "create", "stray", "--template", "news", "--list", news, "--from",
         "news@c.test"])
    assert made.code == 0 and "campaign may created" in made.text, made.text
    assert stray.code == 0, stray.text
    again, nolist = data_dir.cli_many(
        ["campaign", "create", "may", "--template", "news", "--list", news, "--from", "n@a.test"],
        ["campaign", "create", "x", "--template", "news", "--list", "nope", "--from", "n@a.test"])
    assert again.code == 1 and "already exists" in again.text
    assert nolist.code == 1 and "no list named 'nope'" in nolist.text

    listed, shown, ok, bad, tested = data_dir.cli_many(
        ["campaign", "list"], ["campaign", "show", "may"], ["campaign", "preflight", "may"],
        ["campaign", "preflight", "stray"], ["campaign", "test", "may", "--to", "boss@c.test"])
    assert "April news" in listed.text and "may" in listed.text and "3 campaign(s)" in listed.text
    assert "draft" in shown.text and "60/min" in shown.text and "A News <news@a.test>" in shown.text
    assert ok.code == 0 and "ready to start" in ok.text, ok.text
    assert bad.code == 1 and "[dkim] no active DKIM key for c.test" in bad.text, bad.text
    assert "warning [from-domain]" in bad.text and "cannot start" in bad.text
    assert tested.code == 0 and "test to boss@c.test queued as" in tested.text, tested.text


def test_start_pause_resume_cancel_schedule_and_stats(data_dir: DataDir) -> None:
    news = seeded(data_dir)
    made, stray = data_dir.cli_many(
        ["campaign", "create", "may", "--template", "news", "--list", news, "--from",
         "news@a.test"],
        ["campaign", "create", "stray", "--template", "news", "--list", news, "--from",
         "news@c.test"])
    assert made.code == 0 and stray.code == 0, (made.text, stray.text)
    refused, later, started = data_dir.cli_many(
        ["campaign", "start", "stray"],
        ["campaign", "start", "April news", "--at", "2999-01-01T09:00"],
        ["campaign", "start", "may"])
    assert started.code == 0 and "is sending" in started.text, started.text
    assert refused.code == 1 and "not started" in refused.text
    assert "[dkim]" in refused.text, refused.text
    assert later.code == 0 and "scheduled for 2999-01-01 09:00:00 UTC" in later.text, later.text
    steps = [("pause", "paused (now paused)"),
             ("resume", "resumed (now sending)"), ("cancel", "cancelled (now cancelled)")]
    for verb, expected in steps:
        result = data_dir.cli("campaign", verb, "may")
        assert result.code == 0 and expected in result.text, (verb, result.text)
    late, stats = data_dir.cli_many(["campaign", "resume", "may"],
                                    ["campaign", "stats", "April news"])
    assert late.code == 1 and "is cancelled: it cannot become sending" in late.text, late.text
    assert "none: it is final" in late.text
    assert stats.code == 0 and "April news: scheduled" in stats.text, stats.text
    assert "queued (sent) │ 0" in stats.text and "opened (people) │ 0" in stats.text
