"""Feedback-ID and MIME-Version lines for submitted mail that leaves (byte-exact)."""

from __future__ import annotations

from mailprime.message.feedback_id import (
    FIELD_MAX,
    FeedbackIdConfig,
    feedback_id,
    provider_header_lines,
)

CONFIG = FeedbackIdConfig(sender_id="mailprime", mail_type="transactional", campaign="default")


def test_defaults_and_customer_from_the_sender_domain() -> None:
    head = b"From: a@A.Test\r\nSubject: x\r\n\r\nbody\r\n"
    assert provider_header_lines(head, sender="a@A.Test", config=CONFIG) == (
        b"Feedback-ID: default:a.test:transactional:mailprime\r\n")


def test_client_headers_choose_campaign_and_type() -> None:
    head = (b"From: a@a.test\r\nX-Campaign-ID: spring-2030\r\nX-Mailprime-Type:  newsletter \r\n"
            b"Content-Type: text/plain\r\n\r\nbody\r\n")
    assert provider_header_lines(head, sender="a@a.test", config=CONFIG) == (
        b"Feedback-ID: spring-2030:a.test:newsletter:mailprime\r\nMIME-Version: 1.0\r\n")


def test_existing_fields_are_kept() -> None:
    head = (b"Feedback-ID: 1:2:3:them\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            b"\r\nbody\r\n")
    assert provider_header_lines(head, sender="a@a.test", config=CONFIG) == b""


def test_no_sender_id_means_no_feedback_id() -> None:
    head = b"Subject: x\r\n\r\n"
    assert provider_header_lines(head, sender="a@a.test",
                                 config=FeedbackIdConfig(sender_id="")) == b""


def test_injection_and_extra_fields_are_neutralised() -> None:
    value = feedback_id(campaign="a:b\r\nBcc: x@y", customer="c", mail_type="t", sender_id="s")
    assert value == "a-b--Bcc--x-y:c:t:s"
    assert value.count(":") == 3
    long = feedback_id(campaign="x" * 500, customer="c", mail_type="t", sender_id="s")
    assert long.split(":")[0] == "x" * FIELD_MAX


def test_folded_campaign_header_is_read_unfolded() -> None:
    head = b"X-Campaign-ID:\r\n spring\r\nSubject: s\r\n\r\n"
    assert provider_header_lines(head, sender="a@a.test", config=CONFIG) == (
        b"Feedback-ID: spring:a.test:transactional:mailprime\r\n")
