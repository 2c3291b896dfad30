"""`mailprime tls-report`, run as the real command on a data directory whose database holds TLS
results and a cached MTA-STS policy: the table, and the RFC 8460 4.4 JSON bodies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from mailprime.config import load_settings
from mailprime.domain.deliverability import MtaStsPolicyRecord, TlsResultKey
from mailprime.storage.sql import open_store
from tests.cli.conftest import DataDir

pytestmark = pytest.mark.slow  # runs the real command

DAY = date(2026, 11, 20)
POLICY = "version: STSv1\nmode: enforce\nmx: mx.b.test\nmax_age: 86400\n"


def seed(data_dir: DataDir) -> None:
    settings = load_settings(data_dir.config, environ={})

    async def write() -> None:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            await store.add_tls_results(DAY, {
                TlsResultKey("b.test", "sts", ""): 12,
                TlsResultKey("b.test", "sts", "certificate-host-mismatch", "mx2.b.test"): 2,
                TlsResultKey("c.test", "no-policy-found", ""): 5,
            })
            await store.add_tls_results(DAY + timedelta(days=1),
                                        {TlsResultKey("b.test", "sts", ""): 99})
            now = datetime(2026, 11, 20, tzinfo=UTC)
            await store.save_mta_sts_policy(MtaStsPolicyRecord(
                "b.test", "id1", POLICY, now, now + timedelta(days=1)))
        finally:
            await store.close()

    asyncio.run(write())


def test_table_and_json_reports(data_dir: DataDir) -> None:
    seed(data_dir)
    table, as_json, one, empty, bad = data_dir.cli_many(
        ["tls-report", "--day", DAY.isoformat()],
        ["tls-report", "--day", DAY.isoformat(), "--json"],
        ["tls-report", "--day", DAY.isoformat(), "--json", "--domain", "C.test."],
        ["tls-report", "--day", "2020-01-01"],
        ["tls-report", "--day", "yesterday"],
    )
    assert table.code == 0, table.err
    text = table.text
    assert "TLS results 2026-11-20 (UTC)" in text
    for expected in ("b.test │ sts │ success │ │ 12",
                     "b.test │ sts │ certificate-host-mismatch │ mx2.b.test │ 2",
                     "c.test │ no-policy-found │ success │ │ 5"):
        assert expected in text, text

    assert as_json.code == 0, as_json.err
    reports = [json.loads(line) for line in as_json.out.splitlines()]
    assert [r["policies"][0]["policy"]["policy-domain"] for r in reports] == ["b.test", "c.test"]
    b = reports[0]
    assert b["organization-name"] == "mail.a.test"
    assert b["contact-info"] == "postmaster@mail.a.test"
    assert b["report-id"] == "2026-11-20.b.test@mail.a.test"
    assert b["date-range"] == {"start-datetime": "2026-11-20T00:00:00Z",
                               "end-datetime": "2026-11-20T23:59:59Z"}
    assert b["policies"] == [{
        "policy": {"policy-type": "sts", "policy-domain": "b.test",
                   "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.b.test",
                                     "max_age: 86400"]},
        "summary": {"total-successful-session-count": 12, "total-failure-session-count": 2},
        "failure-details": [{"result-type": "certificate-host-mismatch",
                             "receiving-mx-hostname": "mx2.b.test", "failed-session-count": 2}],
    }]

    assert one.code == 0, one.err
    (c,) = [json.loads(line) for line in one.out.splitlines()]
    assert c["policies"] == [{
        "policy": {"policy-type": "no-policy-found", "policy-domain": "c.test"},
        "summary": {"total-successful-session-count": 5, "total-failure-session-count": 0}}]

    assert empty.code == 0 and "no TLS results recorded for 2020-01-01" in empty.text
    assert bad.code == 2 and "--day: expected YYYY-MM-DD, got 'yesterday'" in bad.text
