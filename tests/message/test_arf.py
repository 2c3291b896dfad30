"""parse_arf: RFC 5965 feedback reports, and which of our recipients complained."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailprime.message.arf import FeedbackReport, RecipientSource, parse_arf
from mailprime.message.bounce_parse import parse_bounce

SAMPLES = Path(__file__).parent / "bounces"


def sample(name: str) -> FeedbackReport:
    report = parse_arf((SAMPLES / name).read_bytes())
    assert report is not None
    return report


def test_rfc5965_report_with_original_rcpt_to() -> None:
    r = sample("arf-abuse-original-rcpt-to.eml")
    assert r.feedback_type == "abuse"
    assert (r.recipient, r.recipient_source) == ("alice@mailbox.example", RecipientSource.ORIGINAL_RCPT_TO)
    assert r.user_agent == "SomeGenerator/1.0"
    assert r.version == "1"
    assert r.original_mail_from == "bounces+alice=mailbox.example@origin.test"
    assert r.original_rcpt_to == ("alice@mailbox.example",)
    assert r.arrival_date == "Thu, 26 Nov 2026 12:55:02 +0000"
    assert r.source_ip == "192.0.2.10"
    assert r.reported_domains == ("origin.test",)
    assert r.original_message_id == "<179570130001.1.12@origin.test>"
    assert b"Subject: This week's offers" in r.original_headers


def test_yahoo_report_with_headers_only_maps_by_to() -> None:
    r = sample("arf-yahoo-headers-only.eml")
    assert (r.recipient, r.recipient_source) == ("bob@yahoo.example", RecipientSource.TO)
    assert r.user_agent == "Yahoo!-Mail-Feedback/2.0"
    assert r.original_rcpt_to == ()
    assert r.original_message_id == "<179570159801.1.13@origin.test>"


def test_redacted_report_maps_by_our_own_header() -> None:
    r = sample("arf-redacted-uses-own-header.eml")
    assert (r.recipient, r.recipient_source) == ("carol@aol.example", RecipientSource.HEADER)
    assert r.arrival_date == "Thu, 26 Nov 2026 13:05:00 EST"  # the older Received-Date field


def test_the_recipient_header_is_configurable() -> None:
    data = (SAMPLES / "arf-redacted-uses-own-header.eml").read_bytes().replace(
        b"X-Mailprime-Recipient:", b"X-Campaign-Rcpt:")
    unmapped = parse_arf(data)
    assert unmapped is not None
    assert unmapped.recipient is None
    mapped = parse_arf(data, recipient_header="X-Campaign-Rcpt")
    assert mapped is not None
    assert (mapped.recipient, mapped.recipient_source) == ("carol@aol.example", RecipientSource.HEADER)
    assert parse_arf(data, recipient_header="X-Ünïcode") is not None  # no such field, no error


def test_complaints_are_not_bounces_and_bounces_are_not_complaints() -> None:
    for path in SAMPLES.glob("*.eml"):
        data = path.read_bytes()
        if path.name.startswith("arf-"):
            assert parse_bounce(data) == [], path.name
        else:
            assert parse_arf(data) is None, path.name


def arf(fields: str, original: str = "", original_type: str = "message/rfc822") -> bytes:
    third = f"--B\nContent-Type: {original_type}\n\n{original}\n" if original else ""
    return (
        "From: fbl@isp.example\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nA complaint.\n"
        f"--B\nContent-Type: message/feedback-report\n\n{fields}\n{third}--B--\n"
    ).encode()


def test_several_original_rcpt_to_and_reported_domains() -> None:
    r = parse_arf(arf("Feedback-Type: Abuse\nOriginal-Rcpt-To: a@example.net\nOriginal-Rcpt-To: "
                      "<b@example.net>\nReported-Domain: origin.test\nReported-Domain: links.origin.test\n"))
    assert r is not None
    assert r.feedback_type == "abuse"
    assert r.recipients == ("a@example.net", "b@example.net")
    assert r.reported_domains == ("origin.test", "links.origin.test")


@pytest.mark.parametrize(("fields", "original", "expected"), [
    # a redacted Original-Rcpt-To falls through to the To of the original
    ("Feedback-Type: abuse\nOriginal-Rcpt-To: redacted@isp.example\n",
     "To: Dan <dan@isp.example>\nSubject: x\n", ("dan@isp.example", RecipientSource.TO)),
    # a To naming several addresses cannot say which one complained: our header can
    ("Feedback-Type: abuse\n", "To: a@isp.example, b@isp.example\nX-Mailprime-Recipient: b@isp.example\n",
     ("b@isp.example", RecipientSource.HEADER)),
    # nothing usable
    ("Feedback-Type: abuse\n", "To: undisclosed-recipients:;\n", (None, None)),
    ("Feedback-Type: abuse\n", "", (None, None)),
])
def test_recipient_sources_in_order(fields: str, original: str,
                                    expected: tuple[str | None, RecipientSource | None]) -> None:
    r = parse_arf(arf(fields, original))
    assert r is not None
    assert (r.recipient, r.recipient_source) == expected


def test_headers_only_third_part() -> None:
    r = parse_arf(arf("Feedback-Type: fraud\n", "To: eve@isp.example\nMessage-ID: <m@origin.test>\n",
                      original_type="text/rfc822-headers"))
    assert r is not None
    assert (r.feedback_type, r.recipient, r.original_message_id) == ("fraud", "eve@isp.example",
                                                                     "<m@origin.test>")


@pytest.mark.parametrize("message", [
    b"",
    b"Subject: hello\n\nNot a report.\n",
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n--B--\n',
])
def test_non_reports(message: bytes) -> None:
    assert parse_arf(message) is None
