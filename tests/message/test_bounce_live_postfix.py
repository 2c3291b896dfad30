"""A real Postfix bounces freshly (the same way generate.py made the postfix-*.eml samples), and
parse_bounce reads its bounces exactly as it reads the stored samples: so the samples cannot
drift from what the Postfix installed here writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailprime.message.bounce_parse import header_text, parse_bounce_report
from tests.message.bounces.generate import MULTI, postfix_bounces, sample_name
from tests.message.test_bounce_parse import EXPECTED
from tests.support.postfix import postfix_unavailable

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

JOBS = [
    (["user-unknown"], ["nosuch@example.net"]),
    (["gmail-5.7.26"], ["gmail-auth@gmail.example"]),
    (["yahoo-tss04-expired"], ["yahoo-busy@yahoo.example"]),
    (list(MULTI), ["nosuch@example.net", "full@example.net"]),
]


def test_postfix_bounces_read_like_the_samples(tmp_path: Path) -> None:
    if reason := postfix_unavailable():
        pytest.skip(reason)
    bounces = postfix_bounces(tmp_path, JOBS)
    assert len(bounces) == len(JOBS)
    for bounce in bounces:
        name = sample_name("postfix", bounce)
        fmt, subject, rows = EXPECTED[name]
        report = parse_bounce_report(bounce.data)
        assert report is not None, name
        assert report.format is fmt
        assert header_text(report.original_headers, "Subject") == subject
        got = [(r.recipient, r.action, r.status, r.reason, r.hard, r.remote_mta)
               for r in report.recipients]
        assert sorted(got) == sorted(rows), name  # Postfix may list recipients in either order
