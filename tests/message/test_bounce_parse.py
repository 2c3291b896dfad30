"""parse_bounce on real bounces (tests/message/bounces/, see its README for how each was made)
and on DSN corner cases written here."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mailprime.message.bounce_parse import (
    BounceFormat,
    FailedRecipient,
    dsn_address,
    dsn_groups,
    header_text,
    parse_bounce,
    parse_bounce_report,
)
from mailprime.message.bounce_reason import BounceReason

R = BounceReason
SAMPLES = Path(__file__).parent / "bounces"
F, D = "failed", "delayed"

# file -> (format, returned Subject or None, [(recipient, action, status, reason, hard, remote)]).
Row = tuple[str, str, str, BounceReason, bool, str | None]
EXPECTED: dict[str, tuple[BounceFormat, str | None, list[Row]]] = {
    # Postfix 3.7 (Debian), made by generate.py: the replies are the providers' own words.
    "postfix-user-unknown.eml": (BounceFormat.DSN, "sample user-unknown", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "postfix-mailbox-full.eml": (BounceFormat.DSN, "sample mailbox-full", [
        ("full@example.net", F, "5.2.2", R.MAILBOX_FULL, False, "127.0.0.1")]),
    "postfix-too-large.eml": (BounceFormat.DSN, "sample too-large", [
        ("small@example.net", F, "5.3.4", R.MESSAGE_TOO_LARGE, True, "127.0.0.1")]),
    "postfix-gmail-5.7.26.eml": (BounceFormat.DSN, "sample gmail-5.7.26", [
        ("gmail-auth@gmail.example", F, "5.7.26", R.AUTH_FAILURE, True, "127.0.0.1")]),
    "postfix-gmail-user-unknown.eml": (BounceFormat.DSN, "sample gmail-user-unknown", [
        ("gone@gmail.example", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "postfix-gmail-5.7.1-spam.eml": (BounceFormat.DSN, "sample gmail-5.7.1-spam", [
        ("spamtrap@gmail.example", F, "5.7.1", R.POLICY, True, "127.0.0.1")]),
    "postfix-microsoft-5.7.515.eml": (BounceFormat.DSN, "sample microsoft-5.7.515", [
        ("ms-auth@outlook.example", F, "5.7.515", R.AUTH_FAILURE, True, "127.0.0.1")]),
    "postfix-microsoft-5.7.708.eml": (BounceFormat.DSN, "sample microsoft-5.7.708", [
        ("ms-ip@outlook.example", F, "5.7.708", R.POLICY, True, "127.0.0.1")]),
    "postfix-outlook-user-unknown.eml": (BounceFormat.DSN, "sample outlook-user-unknown", [
        ("nobody@outlook.example", F, "5.5.0", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "postfix-yahoo-5.7.9-policy.eml": (BounceFormat.DSN, "sample yahoo-5.7.9-policy", [
        ("yahoo-policy@yahoo.example", F, "5.7.9", R.POLICY, True, "127.0.0.1")]),
    # Postfix gave up on a temporary refusal (queue lifetime 0): Action failed, Status 4.7.0.
    "postfix-yahoo-tss04-expired.eml": (BounceFormat.DSN, "sample yahoo-tss04-expired", [
        ("yahoo-busy@yahoo.example", F, "4.7.0", R.EXPIRED, False, "127.0.0.1")]),
    "postfix-user-unknown-and-mailbox-full.eml": (BounceFormat.DSN, "sample user-unknown+mailbox-full", [
        ("full@example.net", F, "5.2.2", R.MAILBOX_FULL, False, "127.0.0.1"),
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1")]),
    # Exim 4.96 (Debian), made by generate.py: Status is always 5.0.0, the reply says more.
    "exim-user-unknown.eml": (BounceFormat.DSN, "sample user-unknown", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "exim-mailbox-full.eml": (BounceFormat.DSN, "sample mailbox-full", [
        ("full@example.net", F, "5.2.2", R.MAILBOX_FULL, False, "127.0.0.1")]),
    "exim-too-large.eml": (BounceFormat.DSN, "sample too-large", [
        ("small@example.net", F, "5.3.4", R.MESSAGE_TOO_LARGE, True, "127.0.0.1")]),
    "exim-gmail-5.7.26.eml": (BounceFormat.DSN, "sample gmail-5.7.26", [
        ("gmail-auth@gmail.example", F, "5.7.26", R.AUTH_FAILURE, True, "127.0.0.1")]),
    "exim-gmail-user-unknown.eml": (BounceFormat.DSN, "sample gmail-user-unknown", [
        ("gone@gmail.example", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "exim-gmail-5.7.1-spam.eml": (BounceFormat.DSN, "sample gmail-5.7.1-spam", [
        ("spamtrap@gmail.example", F, "5.7.1", R.POLICY, True, "127.0.0.1")]),
    "exim-microsoft-5.7.515.eml": (BounceFormat.DSN, "sample microsoft-5.7.515", [
        ("ms-auth@outlook.example", F, "5.7.515", R.AUTH_FAILURE, True, "127.0.0.1")]),
    "exim-microsoft-5.7.708.eml": (BounceFormat.DSN, "sample microsoft-5.7.708", [
        ("ms-ip@outlook.example", F, "5.7.708", R.POLICY, True, "127.0.0.1")]),
    "exim-outlook-user-unknown.eml": (BounceFormat.DSN, "sample outlook-user-unknown", [
        ("nobody@outlook.example", F, "5.5.0", R.USER_UNKNOWN, True, "127.0.0.1")]),
    "exim-yahoo-5.7.9-policy.eml": (BounceFormat.DSN, "sample yahoo-5.7.9-policy", [
        ("yahoo-policy@yahoo.example", F, "5.7.9", R.POLICY, True, "127.0.0.1")]),
    # "421 4.7.0 ...: retry timeout exceeded" under Status 5.0.0: the quoted 4.7.0 decides.
    "exim-yahoo-tss04-expired.eml": (BounceFormat.DSN, "sample yahoo-tss04-expired", [
        ("yahoo-busy@yahoo.example", F, "4.7.0", R.EXPIRED, False, "127.0.0.1")]),
    "exim-user-unknown-and-mailbox-full.eml": (BounceFormat.DSN, "sample user-unknown+mailbox-full", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "127.0.0.1"),
        ("full@example.net", F, "5.2.2", R.MAILBOX_FULL, False, "127.0.0.1")]),
    # Written from the formats' documentation and public samples (README).
    "exim-legacy-two-recipients.eml": (BounceFormat.EXIM, "sample exim-legacy", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "mx.example.net"),
        ("ghost@nxdomain.example", F, "5.1.2", R.DOMAIN_NOT_FOUND, True, None)]),
    "qmail-three-recipients.eml": (BounceFormat.QMAIL, "sample qmail", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "192.0.2.25"),
        ("anyone@nxdomain.example", F, "5.1.2", R.DOMAIN_NOT_FOUND, True, None),
        ("slow@example.org", F, "4.3.2", R.EXPIRED, False, "192.0.2.7")]),
    "sendmail-user-unknown.eml": (BounceFormat.DSN, "sample sendmail", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "mx.example.net")]),
    "sendmail-legacy-fatal-and-transient.eml": (BounceFormat.SENDMAIL, "sample sendmail-legacy", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "mx.example.net"),
        ("busy@example.org", D, "4.2.2", R.MAILBOX_FULL, False, "mx.example.org")]),
    "courier-user-unknown.eml": (BounceFormat.DSN, "sample courier", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "mx.example.net")]),
    # No Diagnostic-Code: the transcript in the text part ("<<< 452 4.2.2 ...") says why.
    "courier-delayed.eml": (BounceFormat.DSN, "sample courier-delayed", [
        ("busy@example.org", D, "4.2.2", R.MAILBOX_FULL, False, "mx.example.org")]),
    "office365-user-unknown.eml": (BounceFormat.DSN, "sample office365", [
        ("nosuch@contoso.example", F, "5.1.10", R.USER_UNKNOWN, True, None)]),
    # No Diagnostic-Code: "Diagnostic information for administrators" in the text part says why.
    "exchange-policy-no-diagnostic-code.eml": (BounceFormat.DSN, "sample exchange", [
        ("ceo@fabrikam.example", F, "5.7.1", R.POLICY, True, "EX01.fabrikam.example")]),
    "exchange2003-text.eml": (BounceFormat.EXCHANGE, None, [
        ("nosuch@fabrikam.example", F, "5.1.1", R.USER_UNKNOWN, True, "EX2003.fabrikam.example"),
        ("full@fabrikam.example", F, "5.2.2", R.MAILBOX_FULL, False, "EX2003.fabrikam.example")]),
    "gmail-dsn-user-unknown.eml": (BounceFormat.DSN, "sample gmail-dsn", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, "mx.example.net")]),
    "gmail-dsn-delayed.eml": (BounceFormat.DSN, "sample gmail-delayed", [
        ("slow@example.org", D, "4.4.1", R.NETWORK, False, None)]),
    "gmail-legacy-text.eml": (BounceFormat.GMAIL, "sample gmail-legacy", [
        ("full@example.jp", F, "5.2.2", R.MAILBOX_FULL, False, "mx.example.jp")]),
    "yahoo-legacy-text.eml": (BounceFormat.YAHOO, "sample yahoo-legacy", [
        ("nosuch@example.net", F, "5.1.1", R.USER_UNKNOWN, True, None)]),
}


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_every_bounce_sample_has_expectations() -> None:
    on_disk = {p.name for p in SAMPLES.glob("*.eml") if not p.name.startswith("arf-")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name: str) -> None:
    fmt, subject, rows = EXPECTED[name]
    report = parse_bounce_report(_sample(name))
    assert report is not None
    assert report.format is fmt
    got = [(r.recipient, r.action, r.status, r.reason, r.hard, r.remote_mta) for r in report.recipients]
    assert got == rows
    if subject is None:
        assert report.original_headers == b""
    else:
        assert header_text(report.original_headers, "Subject") == subject
    for r in report.recipients:
        assert r.diagnostic, "every failure says why, in the remote server's or the MTA's words"
        assert "\n" not in r.diagnostic


def test_sample_diagnostics_are_the_remote_replies() -> None:
    [gmail] = parse_bounce(_sample("postfix-gmail-5.7.26.eml"))
    assert gmail.diagnostic.startswith("550-5.7.26 This mail has been blocked because the sender is "
                                       "unauthenticated.")
    assert gmail.diagnostic.endswith("- gsmtp")
    [legacy, _] = parse_bounce(_sample("exim-legacy-two-recipients.eml"))
    assert legacy.diagnostic == ("550 5.1.1 <nosuch@example.net>: Recipient address rejected: "
                                 "User unknown in virtual mailbox table")
    [exchange] = parse_bounce(_sample("exchange-policy-no-diagnostic-code.eml"))
    assert exchange.diagnostic == "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized"


def test_postfix_original_recipient_is_reported() -> None:
    [r] = parse_bounce(_sample("postfix-user-unknown.eml"))
    assert r.original_recipient == "nosuch@example.net"


def test_crlf_and_lf_samples_read_the_same() -> None:
    crlf = _sample("postfix-user-unknown-and-mailbox-full.eml")
    assert b"\r\n" in crlf
    assert parse_bounce(crlf.replace(b"\r\n", b"\n")) == parse_bounce(crlf)


# DSN corner cases ---------------------------------------------------------------------------------

def dsn(status_body: str, *, encoding: str | None = None, kind: str = "delivery-status",
        human: str = "The mail system could not deliver your message.\n") -> bytes:
    body = status_body.encode("utf-8")
    header = f"Content-Type: message/{kind}\n"
    if encoding == "base64":
        body = base64.encodebytes(body)
        header += "Content-Transfer-Encoding: base64\n"
    return (
        b"From: MAILER-DAEMON@mta.example\nTo: news@origin.test\nSubject: Undelivered Mail\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\n" + human.encode() + b"\n"
        b"--B\n" + header.encode() + b"\n" + body + b"\n--B--\n"
    )


def only(message: bytes) -> FailedRecipient:
    [r] = parse_bounce(message)
    return r


def test_success_reports_are_not_bounces() -> None:
    assert parse_bounce(dsn("Reporting-MTA: dns; mta.example\n\nFinal-Recipient: rfc822; a@example.net\n"
                            "Action: delivered\nStatus: 2.0.0\n")) == []
    assert parse_bounce(dsn("Reporting-MTA: dns; mta.example\n\nFinal-Recipient: rfc822; a@example.net\n"
                            "Action: relayed\nStatus: 2.0.0\n")) == []


def test_only_the_failed_recipients_of_a_mixed_report() -> None:
    found = parse_bounce(dsn(
        "Reporting-MTA: dns; mta.example\n\n"
        "Final-Recipient: rfc822; ok@example.net\nAction: delivered\nStatus: 2.0.0\n\n"
        "Final-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n"))
    assert [r.recipient for r in found] == ["gone@example.net"]


def test_missing_action_follows_the_status_class() -> None:
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nStatus: 4.2.2\n"))
    assert (r.action, r.reason, r.hard) == ("delayed", R.MAILBOX_FULL, False)
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nStatus: 5.1.1\n"))
    assert (r.action, r.reason, r.hard) == ("failed", R.USER_UNKNOWN, True)


def test_no_status_at_all_takes_the_class_from_the_action() -> None:
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\n"
                 "Diagnostic-Code: X-Postfix; mailbox unavailable\n"))
    assert (r.status, r.reason, r.hard) == ("5.1.1", R.USER_UNKNOWN, True)


def test_a_failed_transient_status_means_the_mta_gave_up() -> None:
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 4.4.1\n"
                 "Diagnostic-Code: X-Postfix; connect to mx.example.net[192.0.2.1]:25: Connection "
                 "refused\n"))
    assert (r.status, r.reason, r.hard) == ("4.4.1", R.EXPIRED, False)


def test_a_repeated_final_recipient_without_an_empty_line_starts_a_new_recipient() -> None:
    found = parse_bounce(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.1.1\n"
                             "Final-Recipient: rfc822; b@example.net\nAction: failed\nStatus: 5.2.2\n"))
    assert [(r.recipient, r.reason) for r in found] == [("a@example.net", R.USER_UNKNOWN),
                                                       ("b@example.net", R.MAILBOX_FULL)]


def test_base64_delivery_status_and_folded_fields() -> None:
    r = only(dsn("Final-Recipient: rfc822;\n <a@example.net>\nAction: FAILED\nStatus: 5.1.1 (bad mailbox)\n"
                 "Diagnostic-Code: smtp; 550 5.1.1 <a@example.net>:\n\tRecipient address rejected\n",
                 encoding="base64"))
    assert (r.recipient, r.action, r.status) == ("a@example.net", "failed", "5.1.1")
    assert r.diagnostic == "550 5.1.1 <a@example.net>: Recipient address rejected"


def test_global_delivery_status_with_a_utf8_address() -> None:
    r = only(dsn("Final-Recipient: utf-8; z\\x{F6}e@example.net\nAction: failed\nStatus: 5.1.1\n",
                 kind="global-delivery-status"))
    assert r.recipient == "zöe@example.net"


def test_the_more_specific_quoted_status_replaces_a_catch_all() -> None:
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.0.0\n"
                 "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"))
    assert (r.status, r.reason, r.hard) == ("5.2.2", R.MAILBOX_FULL, False)
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.7.1\n"
                 "Diagnostic-Code: smtp; 550 5.1.1 whatever\n"))
    assert r.status == "5.7.1"  # a specific Status stays


def test_without_a_diagnostic_the_human_text_about_the_recipient_is_used() -> None:
    r = only(dsn("Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.0.0\n",
                 human="Delivery failed:\n\n<a@example.net>\n  The mailbox is full.\n\nBye.\n"))
    assert (r.reason, r.diagnostic) == (R.MAILBOX_FULL, "<a@example.net> The mailbox is full.")


def test_recipients_without_an_address_are_skipped() -> None:
    assert parse_bounce(dsn("Final-Recipient: rfc822; not an address\nAction: failed\n"
                            "Status: 5.1.1\n")) == []
    assert parse_bounce(dsn("Action: failed\nStatus: 5.1.1\n")) == []


def test_dsn_groups_and_addresses() -> None:
    groups = list(dsn_groups("Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\n"
                             "Action: failed\r\n  \r\nnot a field\r\nStatus: 5.1.1\r\n"))
    assert groups == [{"reporting-mta": "dns; x"}, {"final-recipient": "rfc822; a@b", "action": "failed"},
                      {"status": "5.1.1"}]
    assert dsn_address("RFC822; <A@Example.NET>") == "A@Example.NET"
    assert dsn_address("a@b") == "a@b"
    assert dsn_address("x400; /c=us/") == ""


@pytest.mark.parametrize("message", [
    b"",
    b"From: alice@example.net\nSubject: hello\n\nJust a letter mentioning bob@example.net 550.\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n"
    b"Content-Type: multipart/report; boundary=y\n\n--y\nContent-Type: message/delivery-status\n\n"
    b"Final-Recipient: rfc822; inner@example.net\nAction: failed\nStatus: 5.1.1\n--y--\n--x--\n",
])
def test_non_bounces(message: bytes) -> None:
    # The last one forwards a bounce as an attachment: the report inside is not ours to read.
    assert parse_bounce(message) == []
    assert parse_bounce_report(message) is None


def test_a_forwarded_notice_without_its_marker_is_not_a_bounce() -> None:
    text = _sample("qmail-three-recipients.eml").replace(b"Hi. This is the qmail-send program",
                                                         b"Hello, this is Bob")
    assert parse_bounce(text) == []
