"""classify_reply: one synchronous failure (an SMTP reply, or the MTA's words without one) ->
reason, hard/soft and the enhanced status code."""

from __future__ import annotations

import pytest

from mailprime.message.bounce_reason import (
    BounceReason,
    Classification,
    basic_code,
    classify_reply,
    enhanced_in,
    parse_enhanced,
)

R = BounceReason

# (code, enhanced, text) -> (reason, hard, status). Provider texts are as the providers send them.
CASES: list[tuple[int | None, str | None, str, BounceReason, bool, str]] = [
    # user unknown
    (550, "5.1.1", "<nosuch@example.net>: Recipient address rejected: User unknown in virtual mailbox "
     "table", R.USER_UNKNOWN, True, "5.1.1"),
    (550, None, "550 No such user here", R.USER_UNKNOWN, True, "5.1.1"),
    (550, None, "Requested action not taken: mailbox unavailable", R.USER_UNKNOWN, True, "5.1.1"),
    (None, None, "550 5.1.1 The email account that you tried to reach does not exist. Please try",
     R.USER_UNKNOWN, True, "5.1.1"),
    (554, None, "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - "
     "mta1234.mail.gq1.yahoo.com", R.USER_UNKNOWN, True, "5.1.1"),
    (550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302).",  # Outlook.com
     R.USER_UNKNOWN, True, "5.5.0"),
    (550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     R.USER_UNKNOWN, True, "5.1.10"),
    (550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)",  # Microsoft DBEB
     R.USER_UNKNOWN, True, "5.4.1"),
    (550, "5.2.1", "The email account that you tried to reach is disabled.", R.USER_UNKNOWN, True,
     "5.2.1"),
    (None, None, "Sorry, no mailbox here by that name. (#5.1.1)", R.USER_UNKNOWN, True, "5.1.1"),
    # mailbox full: soft even when permanent
    (552, "5.2.2", "The email account that you tried to reach is over quota.", R.MAILBOX_FULL, False,
     "5.2.2"),
    (452, "4.2.2", "The recipient's inbox is out of storage space.", R.MAILBOX_FULL, False, "4.2.2"),
    (552, None, "Mailbox size limit exceeded", R.MAILBOX_FULL, False, "5.2.2"),
    (550, None, "550 Quota exceeded for this user", R.MAILBOX_FULL, False, "5.2.2"),
    # domain not found
    (None, None, "Host or domain name not found. Name service error for name=nx.example type=MX: "
     "Host not found", R.DOMAIN_NOT_FOUND, False, "4.1.2"),
    (550, "5.1.2", "Bad destination system address", R.DOMAIN_NOT_FOUND, True, "5.1.2"),
    (554, "5.4.4", "Host or domain name not found", R.DOMAIN_NOT_FOUND, True, "5.4.4"),
    (556, "5.1.10", "Recipient address has null MX", R.DOMAIN_NOT_FOUND, True, "5.1.10"),
    (550, "5.4.310", "DNS domain example.invalid does not exist", R.DOMAIN_NOT_FOUND, True, "5.4.310"),
    # policy / spam blocks
    (550, "5.7.1", "[192.0.2.10] Our system has detected that this message is likely unsolicited "
     "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
     R.POLICY, True, "5.7.1"),
    (554, "5.7.9", "Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
     R.POLICY, True, "5.7.9"),
    (550, "5.7.708", "Service unavailable. Access denied, traffic not accepted from this IP.",
     R.POLICY, True, "5.7.708"),
    (550, "5.7.606", "Access denied, banned sending IP [192.0.2.10].", R.POLICY, True, "5.7.606"),
    (554, None, "Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org",
     R.POLICY, True, "5.7.1"),
    (553, "5.7.2", "[TSS09] All messages from 192.0.2.10 will be permanently deferred; Retrying will "
     "NOT succeed.", R.POLICY, True, "5.7.2"),
    (554, "5.7.1", "<x@example.net>: Relay access denied", R.POLICY, True, "5.7.1"),
    (550, "5.7.0", "", R.POLICY, True, "5.7.0"),
    # authentication (SPF, DKIM, DMARC)
    (550, "5.7.26", "This mail has been blocked because the sender is unauthenticated. Gmail requires "
     "all senders to authenticate with either SPF or DKIM.", R.AUTH_FAILURE, True, "5.7.26"),
    (550, None, "550-5.7.26 Unauthenticated email from origin.test is not accepted due to domain's "
     "DMARC policy.", R.AUTH_FAILURE, True, "5.7.26"),
    (550, "5.7.515", "Access denied, sending domain origin.test doesn't meet the required "
     "authentication level.", R.AUTH_FAILURE, True, "5.7.515"),
    (550, "5.7.509", "Access denied, sending domain origin.test does not pass DMARC verification and "
     "has a DMARC policy of reject.", R.AUTH_FAILURE, True, "5.7.509"),
    (550, "5.7.25", "The IP address sending this message does not have a PTR record setup",
     R.AUTH_FAILURE, True, "5.7.25"),
    (421, "4.7.27", "This message does not pass authentication checks (SPF and DKIM both do not "
     "pass).", R.AUTH_FAILURE, False, "4.7.27"),
    (550, "5.7.9", "This mail has been blocked because the sender is unauthenticated. Yahoo requires "
     "all senders to authenticate with either SPF or DKIM.", R.AUTH_FAILURE, True, "5.7.9"),
    # rate limiting: soft even when permanent
    (421, "4.7.0", "[TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or "
     "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     R.RATE_LIMITED, False, "4.7.0"),
    (421, "4.7.28", "[192.0.2.10] Our system has detected an unusual rate of unsolicited mail "
     "originating from your IP address.", R.RATE_LIMITED, False, "4.7.28"),
    (451, "4.7.650", "The mail server [192.0.2.10] has been temporarily rate limited due to IP "
     "reputation.", R.RATE_LIMITED, False, "4.7.650"),
    (450, "4.2.1", "The user you are trying to contact is receiving mail at a rate that prevents "
     "additional messages from being delivered.", R.RATE_LIMITED, False, "4.2.1"),
    (550, "5.7.28", "Mail flood detected", R.RATE_LIMITED, False, "5.7.28"),
    (452, None, "Too many recipients", R.RATE_LIMITED, False, "4.0.0"),
    (550, "5.4.5", "Daily user sending limit exceeded.", R.RATE_LIMITED, False, "5.4.5"),
    # message too large
    (552, "5.3.4", "Message size exceeds fixed maximum message size", R.MESSAGE_TOO_LARGE, True, "5.3.4"),
    (552, None, "Message size exceeds fixed limit", R.MESSAGE_TOO_LARGE, True, "5.3.4"),
    (552, "5.2.3", "Your message exceeded Google's message size limits.", R.MESSAGE_TOO_LARGE, True,
     "5.2.3"),
    # network / TLS: no reply at all is transient
    (None, None, "connect to mx.example.net[192.0.2.25]:25: Connection refused", R.NETWORK, False,
     "4.4.1"),
    (None, None, "conversation with mx.example.net timed out while sending RCPT TO", R.NETWORK, False,
     "4.4.1"),
    (None, None, "TLS handshake failed: certificate verify failed", R.NETWORK, False, "4.4.1"),
    (530, "5.7.0", "Must issue a STARTTLS command first", R.NETWORK, True, "5.7.0"),
    (550, "5.7.10", "Encryption needed", R.NETWORK, True, "5.7.10"),
    # expired
    (None, None, "retry timeout exceeded", R.EXPIRED, False, "4.4.7"),
    (None, "4.4.7", "Delivery time expired", R.EXPIRED, False, "4.4.7"),
    (550, "5.4.316", "Message expired, connection refused", R.EXPIRED, False, "5.4.316"),
    # other
    (451, "4.3.0", "Temporary server error. Please try again later.", R.OTHER, False, "4.3.0"),
    (550, None, "Administrative prohibition", R.POLICY, True, "5.7.1"),
    (554, None, "Transaction failed", R.OTHER, True, "5.0.0"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "reason", "hard", "status"), CASES,
                         ids=[f"{c[3].value}-{c[5]}-{i}" for i, c in enumerate(CASES)])
def test_classify_reply(code: int | None, enhanced: str | None, text: str, reason: BounceReason,
                        hard: bool, status: str) -> None:
    assert classify_reply(code, enhanced, text) == Classification(reason, hard, status)


def test_every_reason_is_reachable_from_some_reply() -> None:
    assert {c[3] for c in CASES} == set(BounceReason)


def test_the_multi_line_reply_as_postfix_quotes_it() -> None:
    text = ("550-5.7.26 This mail has been blocked because the sender is unauthenticated. 550-5.7.26 "
            "Gmail requires all senders to authenticate with either SPF or DKIM. 550 5.7.26  "
            "https://support.google.com/mail/answer/81126#authentication - gsmtp")
    assert classify_reply(None, None, text) == Classification(R.AUTH_FAILURE, True, "5.7.26")


def test_a_specific_code_outranks_the_text() -> None:
    # "blocked" would say policy; X.1.1 says the address does not exist, and it decides.
    assert classify_reply(550, "5.1.1", "User unknown, account blocked").reason is R.USER_UNKNOWN
    # the generic X.7.1 lets the text decide
    assert classify_reply(550, "5.7.1", "No such user").reason is R.USER_UNKNOWN


def test_class_4_is_soft_whatever_the_reason() -> None:
    for reason_text in ("User unknown", "spam detected", "Message too large"):
        assert classify_reply(450, "4.0.0", reason_text).hard is False


def test_5xx_is_hard_except_full_rate_and_expired() -> None:
    assert classify_reply(550, "5.2.2", "").hard is False
    assert classify_reply(550, "5.7.28", "").hard is False
    assert classify_reply(550, "5.4.7", "").hard is False
    assert classify_reply(550, "5.7.1", "").hard is True


def test_the_enhanced_argument_wins_over_the_text() -> None:
    assert classify_reply(550, "5.1.1", "550 5.7.1 whatever").status == "5.1.1"


def test_a_malformed_enhanced_argument_is_ignored() -> None:
    assert classify_reply(550, "5.1", "550 5.2.2 Mailbox full").status == "5.2.2"
    assert classify_reply(550, "x.y.z", "").status == "5.0.0"
    assert classify_reply(999, None, "").status == "4.0.0"  # not a reply code: as if none


@pytest.mark.parametrize(("value", "expected"), [
    ("5.1.1", "5.1.1"), (" 4.07.001 ", "4.7.1"), ("5.7.515", "5.7.515"), ("2.0.0", "2.0.0"),
    ("5.1", None), ("6.1.1", None), ("5.1.1.1", None), ("5.1234.1", None), ("", None), (None, None),
])
def test_parse_enhanced(value: str | None, expected: str | None) -> None:
    assert parse_enhanced(value) == expected


@pytest.mark.parametrize(("text", "basic", "expected"), [
    ("550 5.1.1 <a@b>: unknown", 550, "5.1.1"),
    ("550-5.7.26 blocked", 550, "5.7.26"),
    ("550 #5.1.0 Address rejected", 550, "5.1.0"),
    ("Sorry, no mailbox here by that name. (#5.1.1)", None, "5.1.1"),
    ("421 4.7.0 [TSS04] Messages from 192.0.2.10 deferred - 4.16.55.1", 421, "4.7.0"),
    ("host 192.0.2.25 said: mailbox full", None, None),  # an IP address is not a status
    ("550 see 4.16.55.1", 550, None),  # nor part of a longer dotted number, nor a wrong class
    ("Status 5.1.1.", None, "5.1.1"),  # sentence punctuation after it is fine
])
def test_enhanced_in(text: str, basic: int | None, expected: str | None) -> None:
    assert enhanced_in(text, basic) == expected


def test_basic_code() -> None:
    assert basic_code("550 5.1.1 x") == 550
    assert basic_code("452-4.2.2 x") == 452
    assert basic_code("550") == 550
    assert basic_code("5500 x") is None
    assert basic_code("Remote host said: 550") is None


def test_huge_text_costs_bounded_work() -> None:
    verdict = classify_reply(550, None, "x" * 5_000_000 + " user unknown")
    assert verdict.reason is R.OTHER  # only the first MAX_TEXT characters are read
