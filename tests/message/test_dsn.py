"""RFC 3464 DSNs, parsed back with Python's email package to prove their structure."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.mail import DsnNotify
from mailprime.message.dsn import (
    DsnAction,
    DsnNotAllowed,
    DsnRecipient,
    build_dsn,
    wants_dsn,
)

NOW = datetime(2025, 1, 7, 10, 0, tzinfo=UTC)
ARRIVED = NOW - timedelta(days=1)
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the numbers are in.\r\n"
)
FAILED = DsnRecipient(
    final_recipient="bob@example.com",
    action=DsnAction.FAILED,
    status="5.1.1",
    original_recipient="rfc822;Bob+2Bnews@Example.com",
    remote_mta="mx.example.com",
    diagnostic="550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
    last_attempt=NOW,
)
DELAYED = DsnRecipient(
    final_recipient="carol@example.net",
    action=DsnAction.DELAYED,
    status="4.4.1",
    diagnostic="connect to mx.example.net[192.0.2.9]:25: Connection timed out",
    diagnostic_type="x-mailprime",
    last_attempt=NOW,
    will_retry_until=NOW + timedelta(days=4),
)


def dsn(**kwargs: Any) -> bytes:
    args: dict[str, Any] = {
        "reporting_mta": "mx.example.org",
        "original_sender": "alice@example.org",
        "original_content": ORIGINAL,
        "recipients": [FAILED],
        "now": NOW,
        "arrival_date": ARRIVED,
        "message_id": "<dsn-1@mx.example.org>",
    }
    args.update(kwargs)
    return build_dsn(**args)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.iter_parts())  # type: ignore[arg-type]


def status_blocks(msg: EmailMessage) -> list[Message]:
    report = parts(msg)[1]
    assert report.get_content_type() == "message/delivery-status"
    blocks = report.get_payload()
    assert isinstance(blocks, list)
    assert all(isinstance(b, Message) for b in blocks)
    return cast(list[Message], blocks)


# Structure --------------------------------------------------------------------------------------

def test_failure_report_structure() -> None:
    raw = dsn()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert b'\r\nFrom: "Mail Delivery System" <MAILER-DAEMON@mx.example.org>\r\n' in b"\r\n" + raw
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.org"
    assert str(msg["To"]) == "alice@example.org"
    assert str(msg["Subject"]) == "Undelivered Mail Returned to Sender"
    assert str(msg["Auto-Submitted"]) == "auto-replied"
    assert str(msg["Message-ID"]) == "<dsn-1@mx.example.org>"
    assert msg["Date"].datetime == NOW
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]


def test_delivery_status_fields() -> None:
    per_message, rcpt = status_blocks(parse(dsn(envid="ENV-42")))
    assert dict(per_message.items()) == {
        "Original-Envelope-Id": "ENV-42",
        "Reporting-MTA": "dns; mx.example.org",
        "Arrival-Date": "Mon, 06 Jan 2025 10:00:00 +0000",
    }
    assert dict(rcpt.items()) == {
        "Original-Recipient": "rfc822; Bob+news@Example.com",  # xtext decoded (RFC 3461 4)
        "Final-Recipient": "rfc822; bob@example.com",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.example.com",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
        "Last-Attempt-Date": "Tue, 07 Jan 2025 10:00:00 +0000",
    }


def test_delivery_status_byte_exact() -> None:
    raw = dsn(recipients=[DELAYED])
    start = raw.index(b"Content-Type: message/delivery-status\r\n\r\n") + 41
    end = raw.index(b"\r\n--", start)
    assert raw[start:end] == (
        b"Reporting-MTA: dns; mx.example.org\r\n"
        b"Arrival-Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
        b"\r\n"
        b"Final-Recipient: rfc822; carol@example.net\r\n"
        b"Action: delayed\r\n"
        b"Status: 4.4.1\r\n"
        b"Diagnostic-Code: x-mailprime; connect to mx.example.net[192.0.2.9]:25:\r\n"
        b" Connection timed out\r\n"
        b"Last-Attempt-Date: Tue, 07 Jan 2025 10:00:00 +0000\r\n"
        b"Will-Retry-Until: Sat, 11 Jan 2025 10:00:00 +0000"
    )


def test_delay_report_has_its_own_subject_and_headers_only() -> None:
    msg = parse(dsn(recipients=[DELAYED], ret_full=True))
    assert str(msg["Subject"]) == "Delayed Mail (still being retried)"
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"  # RET=FULL is for failures
    (_, rcpt) = status_blocks(msg)
    assert rcpt["Will-Retry-Until"] == "Sat, 11 Jan 2025 10:00:00 +0000"


def test_success_report() -> None:
    ok = DsnRecipient("bob@example.com", DsnAction.DELIVERED, "2.0.0", remote_mta="mx.example.com",
                      diagnostic="250 2.0.0 Ok: queued as 123")
    msg = parse(dsn(recipients=[ok]))
    assert str(msg["Subject"]) == "Successful Mail Delivery Report"
    assert status_blocks(msg)[1]["Action"] == "delivered"


def test_human_part_names_every_recipient() -> None:
    msg = parse(dsn(recipients=[FAILED, DELAYED], queue_id="0QUEUE"))
    text = parts(msg)[0].get_content()
    assert "This is the mail system at host mx.example.org." in text
    assert "0QUEUE" in text
    assert "<bob@example.com> (from mx.example.com): 550 5.1.1" in text
    assert "<carol@example.net>: connect to mx.example.net" in text
    assert "will retry until Sat, 11 Jan 2025 10:00:00 +0000" in text
    assert str(msg["Subject"]) == "Undelivered Mail Returned to Sender"  # failure wins
    assert [b["Action"] for b in status_blocks(msg)[1:]] == ["failed", "delayed"]


# The returned original --------------------------------------------------------------------------

def test_ret_hdrs_returns_the_header_section() -> None:
    third = parts(parse(dsn()))[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert third.get_content().splitlines() == ORIGINAL.split(b"\r\n\r\n")[0].decode().splitlines()


def test_ret_full_returns_the_whole_message() -> None:
    raw = dsn(ret_full=True)
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\n" + ORIGINAL + b"\r\n--" in raw  # verbatim
    third = parts(parse(raw))[2]
    assert third.get_content_type() == "message/rfc822"
    inner = third.get_content()
    assert str(inner["Subject"]) == "Quarterly report"
    assert "the numbers are in." in inner.get_content()


def test_ret_full_of_a_big_message_returns_headers_only() -> None:
    big = ORIGINAL + (b"x" * 70 + b"\r\n") * 200
    third = parts(parse(dsn(ret_full=True, original_content=big, max_full_size=10_000)))[2]
    assert third.get_content_type() == "text/rfc822-headers"


def test_ret_full_of_a_binary_message_returns_headers_only() -> None:
    binary = ORIGINAL + b"\x00\x01" + b"y" * 2000 + b"\r\n"
    third = parts(parse(dsn(ret_full=True, original_content=binary)))[2]
    assert third.get_content_type() == "text/rfc822-headers"


def test_bare_lf_original_is_returned_with_crlf() -> None:
    raw = dsn(ret_full=True, original_content=ORIGINAL.replace(b"\r\n", b"\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_utf8_original_travels_as_base64_message_global() -> None:
    original = "From: José <jose@exämple.org>\r\nSubject: Grüße\r\n\r\nHallo Wörld\r\n".encode()
    raw = dsn(original_content=original, ret_full=True)
    assert raw.isascii()
    third = parts(parse(raw))[2]
    assert third.get_content_type() == "message/global"
    assert third["Content-Transfer-Encoding"] == "base64"
    body = raw.split(b"Content-Transfer-Encoding: base64\r\n\r\n")[1].split(b"\r\n--")[0]
    assert base64.b64decode(body) == original

    headers_only = parse(dsn(original_content=original))
    assert parts(headers_only)[2].get_content_type() == "message/global-headers"


def test_utf8_recipient_is_utf8_addr_xtext() -> None:
    rcpt = DsnRecipient("jösé+x@exämple.com", DsnAction.FAILED, "5.1.1")
    raw = dsn(recipients=[rcpt])
    assert raw.isascii()
    (_, block) = status_blocks(parse(raw))
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}s\\x{E9}\\x{2B}x@ex\\x{E4}mple.com"
    text = parts(parse(raw))[0].get_content()
    assert "<jösé+x@exämple.com>" in text  # people read it decoded (quoted-printable, UTF-8)


def test_utf8_sender_is_written_as_utf8() -> None:
    raw = dsn(original_sender="josé@exämple.org")
    assert "To: <josé@exämple.org>\r\n".encode() in raw


# Refusals and sanitising ------------------------------------------------------------------------

@pytest.mark.parametrize("sender", ["", "<>", "  "])
def test_never_a_dsn_about_a_null_sender(sender: str) -> None:
    with pytest.raises(DsnNotAllowed):
        dsn(original_sender=sender)


def test_no_recipients_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        dsn(recipients=[])


@pytest.mark.parametrize(("action", "status"), [
    (DsnAction.FAILED, "4.4.1"), (DsnAction.DELAYED, "5.1.1"), (DsnAction.DELIVERED, "5.0.0"),
    (DsnAction.FAILED, "5.1"), (DsnAction.FAILED, "550"), (DsnAction.FAILED, "6.0.0"),
])
def test_status_must_fit_action(action: DsnAction, status: str) -> None:
    with pytest.raises(ValueError):
        dsn(recipients=[DsnRecipient("bob@example.com", action, status)])


def test_action_accepts_its_string_value_and_nothing_else() -> None:
    assert DsnRecipient("b@example.com", "failed", "5.0.0").action is DsnAction.FAILED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DsnRecipient("b@example.com", "bounced", "5.0.0")  # type: ignore[arg-type]


def test_multi_line_diagnostics_and_junk_stay_one_field() -> None:
    rcpt = DsnRecipient("bob@example.com", DsnAction.FAILED, "5.7.1",
                        remote_mta="mx.example.com\r\nX-Evil: 1",
                        diagnostic="550-5.7.1 first line\r\n550 5.7.1 second\x00line é" + "z" * 2000)
    raw = dsn(recipients=[rcpt], envid="ENV\r\nX-Evil: 2")
    msg = parse(raw)
    (per_message, block) = status_blocks(msg)
    assert "X-Evil" not in per_message and "X-Evil" not in block
    assert block["Diagnostic-Code"].startswith("smtp; 550-5.7.1 first line 550 5.7.1 second?line ?zzz")
    assert len(block["Diagnostic-Code"]) <= 1010
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_malformed_orcpt_is_left_out() -> None:
    for orcpt in ["no-semicolon", "rfc822;bad+ZZxtext", ";x@example.com", "rfc822;"]:
        rcpt = DsnRecipient("bob@example.com", DsnAction.FAILED, "5.1.1", original_recipient=orcpt)
        (_, block) = status_blocks(parse(dsn(recipients=[rcpt])))
        assert "Original-Recipient" not in block


def test_fresh_message_ids() -> None:
    ids = {parse(dsn(message_id=None))["Message-ID"] for _ in range(20)}
    assert len(ids) == 20
    assert all(str(i).endswith("@mx.example.org>") for i in ids)


def test_boundary_never_occurs_in_the_original() -> None:
    # An original that contains the boundary prefix cannot break the report.
    original = ORIGINAL + b"--=_mailprime_\r\n"
    msg = parse(dsn(original_content=original, ret_full=True))
    assert len(parts(msg)) == 3


# NOTIFY -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("notify", "action", "wanted"), [
    (frozenset(), DsnAction.FAILED, True),
    (frozenset(), DsnAction.DELAYED, True),
    (frozenset(), DsnAction.DELIVERED, False),
    (frozenset({DsnNotify.NEVER}), DsnAction.FAILED, False),
    (frozenset({DsnNotify.SUCCESS}), DsnAction.DELIVERED, True),
    (frozenset({DsnNotify.SUCCESS}), DsnAction.RELAYED, True),
    (frozenset({DsnNotify.SUCCESS}), DsnAction.FAILED, False),
    (frozenset({DsnNotify.FAILURE}), DsnAction.DELAYED, False),
    (frozenset({DsnNotify.FAILURE, DsnNotify.DELAY}), DsnAction.DELAYED, True),
])
def test_wants_dsn(notify: frozenset[DsnNotify], action: DsnAction, wanted: bool) -> None:
    assert wants_dsn(notify, action) is wanted


# Fuzz -------------------------------------------------------------------------------------------

local = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=30)
any_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300)
recipient = st.builds(
    lambda addr, fail, diag, mta: DsnRecipient(
        addr + "@example.com", DsnAction.FAILED if fail else DsnAction.DELAYED,
        "5.1.1" if fail else "4.4.1", remote_mta=mta or None, diagnostic=diag or None,
        will_retry_until=None if fail else NOW),
    local, st.booleans(), any_text, any_text,
)


@settings(max_examples=150, deadline=None)
@given(recipients=st.lists(recipient, min_size=1, max_size=5), original=st.binary(max_size=3000),
       ret_full=st.booleans(), envid=st.one_of(st.none(), any_text))
def test_any_input_gives_a_parseable_ascii_report(recipients: list[DsnRecipient], original: bytes,
                                                  ret_full: bool, envid: str | None) -> None:
    raw = dsn(recipients=recipients, original_content=original, ret_full=ret_full, envid=envid)
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = parse(raw)
    assert [p.get_content_type() for p in parts(msg)][:2] == ["text/plain", "message/delivery-status"]
    blocks = status_blocks(msg)
    assert len(blocks) == 1 + len(recipients)
    for block, rcpt in zip(blocks[1:], recipients, strict=True):
        assert block["Action"] == rcpt.action.value
        assert block["Status"] == rcpt.status
