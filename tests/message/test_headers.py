"""Received, missing Message-ID/Date, folding and header sections: byte-exact and fuzzed."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.headers import (
    FOLD_WIDTH,
    MAX_HEADER_SECTION,
    WithProtocol,
    build_received,
    fold,
    format_date,
    header_names,
    header_section,
    make_message_id,
    missing_header_lines,
    with_protocol,
)

WHEN = datetime(2025, 1, 7, 10, 0, 0, tzinfo=UTC)


# Received ---------------------------------------------------------------------------------------

def test_received_byte_exact() -> None:
    got = build_received(helo="client.example", client_ip="192.0.2.1", client_name="mail.client.example",
                         by_host="mx.example.com", queue_id="0ABC", when=WHEN,
                         recipient="bob@example.com", tls=True)
    assert got == (
        b"Received: from client.example (mail.client.example [192.0.2.1])\r\n"
        b"\tby mx.example.com (mailprime) with ESMTPS id 0ABC\r\n"
        b"\tfor <bob@example.com>; Tue, 07 Jan 2025 10:00:00 +0000\r\n"
    )


def test_received_minimal_ipv6_unknown_rdns_no_recipient() -> None:
    got = build_received(helo="[IPv6:2001:db8::1]", client_ip="2001:DB8::1", by_host="mx.example.com",
                         queue_id="Q1", when=WHEN, esmtp=False)
    assert got == (
        b"Received: from [IPv6:2001:db8::1] (unknown [IPv6:2001:db8::1])\r\n"
        b"\tby mx.example.com (mailprime) with SMTP id Q1;\r\n"
        b"\tTue, 07 Jan 2025 10:00:00 +0000\r\n"
    )


def test_received_tls_clause_and_utf8_recipient() -> None:
    got = build_received(helo="c.example", client_ip="192.0.2.1", by_host="mx.example.com", queue_id="Q",
                         when=WHEN, recipient="<jösé@exämple.com>", tls=True, authenticated=True,
                         smtputf8=True, tls_cipher="TLS_AES_128_GCM_SHA256")
    assert got.decode("utf-8").endswith(
        " with UTF8SMTPSA id Q\r\n\tfor <jösé@exämple.com> tls TLS_AES_128_GCM_SHA256;"
        " Tue, 07 Jan 2025 10:00:00 +0000\r\n")


@pytest.mark.parametrize("helo", [
    "evil\r\nBcc: victim@example.com",
    "x) (forged [10.0.0.1]",
    "a\\b;c",
    "<a>b",
    "\x00\x7f" + "é",
])
def test_received_never_carries_client_junk(helo: str) -> None:
    got = build_received(helo=helo, client_ip="192.0.2.1", by_host="mx", queue_id="Q", when=WHEN)
    assert got.count(b"\r\n") == len(got.splitlines()) == 3  # only our own line ends
    assert got.isascii()
    value = got.decode()
    comment = value[value.index("(") : value.index(")") + 1]
    assert comment == "(unknown [192.0.2.1])"
    msg = email.message_from_bytes(got + b"\r\n", policy=email.policy.default)
    assert list(msg.keys()) == ["Received"]


@pytest.mark.parametrize(("helo", "shown"), [("[192.0.2.1]", b"[192.0.2.1]"), ("[ipv6:::1]", b"[IPv6:::1]"),
                                             ("[nonsense]", b"?nonsense?"), ("[1.2.3.4", b"?1.2.3.4")])
def test_received_helo_address_literal(helo: str, shown: bytes) -> None:
    got = build_received(helo=helo, client_ip="192.0.2.1", by_host="mx", queue_id="Q", when=WHEN)
    assert got.startswith(b"Received: from " + shown + b" (unknown [192.0.2.1])\r\n")


def test_received_bad_ip_is_unknown() -> None:
    got = build_received(helo="h", client_ip="garbage", by_host="mx", queue_id="Q", when=WHEN)
    assert b"(unknown [unknown])" in got


@pytest.mark.parametrize(("kwargs", "keyword"), [
    ({"extended": False, "tls": False, "authenticated": False}, "SMTP"),
    ({"extended": True, "tls": False, "authenticated": False}, "ESMTP"),
    ({"extended": True, "tls": True, "authenticated": False}, "ESMTPS"),
    ({"extended": True, "tls": False, "authenticated": True}, "ESMTPA"),
    ({"extended": True, "tls": True, "authenticated": True}, "ESMTPSA"),
    ({"extended": False, "tls": True, "authenticated": False}, "ESMTPS"),  # HELO over implicit TLS
    ({"extended": True, "tls": False, "authenticated": False, "utf8": True}, "UTF8SMTP"),
    ({"extended": True, "tls": True, "authenticated": True, "utf8": True}, "UTF8SMTPSA"),
    ({"extended": True, "tls": False, "authenticated": False, "lmtp": True}, "LMTP"),
    ({"extended": True, "tls": True, "authenticated": True, "lmtp": True}, "LMTPSA"),
    ({"extended": True, "tls": True, "authenticated": False, "lmtp": True, "utf8": True}, "UTF8LMTPS"),
])
def test_with_protocol_keywords(kwargs: dict[str, bool], keyword: str) -> None:
    assert with_protocol(**kwargs) == WithProtocol(keyword)


def test_protocol_override() -> None:
    got = build_received(helo="api", client_ip="192.0.2.1", by_host="mx", queue_id="Q", when=WHEN,
                         protocol=WithProtocol.HTTP)
    assert b" with HTTP id Q;\r\n" in got


# Dates and ids ----------------------------------------------------------------------------------

def test_format_date() -> None:
    assert format_date(WHEN) == "Tue, 07 Jan 2025 10:00:00 +0000"
    east = datetime(2025, 1, 7, 12, 30, tzinfo=timezone(timedelta(hours=2, minutes=30)))
    assert format_date(east) == "Tue, 07 Jan 2025 12:30:00 +0230"
    with pytest.raises(ValueError):
        format_date(datetime(2025, 1, 7))  # naive on purpose


def test_message_ids_are_fresh_and_well_formed() -> None:
    ids = {make_message_id("mx.example.com") for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"<[0-9a-f]{32}@mx\.example\.com>", i) for i in ids)
    assert re.fullmatch(r"<[0-9a-f]{32}@bad\?host\?>", make_message_id("bad host>"))


# Missing Message-ID / Date ---------------------------------------------------------------------

def test_both_missing() -> None:
    msg = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert missing_header_lines(msg, hostname="mx.example.com", when=WHEN, message_id="<id@x>") == (
        b"Message-ID: <id@x>\r\nDate: Tue, 07 Jan 2025 10:00:00 +0000\r\n"
    )


def test_none_missing_case_insensitively() -> None:
    msg = b"message-id: <a@b>\r\nDATE: Tue, 07 Jan 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    assert missing_header_lines(msg, hostname="mx", when=WHEN) == b""


def test_fields_in_the_body_or_in_continuations_do_not_count() -> None:
    msg = (b"Subject: a long subject\r\n Date: not a field\r\n\tMessage-ID: nor this\r\n\r\n"
           b"Date: in the body\r\nMessage-ID: <in@body>\r\n")
    added = missing_header_lines(msg, hostname="mx.example.com", when=WHEN)
    assert added.startswith(b"Message-ID: <") and b"\r\nDate: Tue, 07 Jan 2025" in added


def test_bare_lf_and_obsolete_space_before_colon() -> None:
    msg = b"Message-ID : <a@b>\nSubject: x\n\nDate: body\n"
    assert missing_header_lines(msg, hostname="mx", when=WHEN) == b"Date: Tue, 07 Jan 2025 10:00:00 +0000\r\n"


def test_added_lines_parse_as_headers() -> None:
    msg = b"Subject: hi\r\n\r\nbody\r\n"
    full = missing_header_lines(msg, hostname="mx.example.com", when=WHEN) + msg
    parsed = email.message_from_bytes(full, policy=email.policy.default)
    assert parsed["Date"].datetime == WHEN
    assert parsed["Message-ID"].endswith("@mx.example.com>")


# Header sections --------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "section"), [
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore", b"A: 1\r\nB: 2\r\n"),
    (b"A: 1\nB: 2\n\nbody", b"A: 1\nB: 2\n"),
    (b"\r\nbody only", b""),
    (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n"),
    (b"A: 1\r\nB: 2", b"A: 1\r\nB: 2"),
    (b"A: 1\n\nX\r\n\r\n", b"A: 1\n"),
])
def test_header_section(message: bytes, section: bytes) -> None:
    assert header_section(message) == section


def test_header_section_is_capped_at_a_line_boundary() -> None:
    line = b"X-Filler: " + b"x" * 88 + b"\r\n"  # 100 octets
    message = line * 2000 + b"\r\nbody"
    section = header_section(message)
    assert len(section) <= MAX_HEADER_SECTION
    assert section.endswith(b"\r\n") and len(section) % 100 == 0
    assert len(header_section(message, limit=250)) == 200


def test_header_names() -> None:
    section = b"From: a\r\nX-Long:\r\n continued: no\r\nnot a header line\r\nSubject : x\r\n: empty\r\n"
    assert header_names(section) == {"from", "x-long", "subject"}


# Folding ----------------------------------------------------------------------------------------

def test_fold_short_line_unchanged() -> None:
    assert fold("Subject", "hello") == "Subject: hello\r\n"


def test_fold_long_line_at_spaces() -> None:
    value = " ".join(["word"] * 40)
    folded = fold("Subject", value)
    lines = folded.split("\r\n")[:-1]
    assert all(len(line) <= FOLD_WIDTH for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])
    assert folded.replace("\r\n", "") == f"Subject: {value}"


def test_fold_long_word_is_kept_whole() -> None:
    token = "x" * 120
    assert fold("X-Token", f"{token} tail") == f"X-Token: {token}\r\n tail\r\n"


def test_fold_never_splits_right_after_the_name() -> None:
    assert fold("Subject", "y" * 100) == f"Subject: {'y' * 100}\r\n"


@pytest.mark.parametrize(("name", "value"), [("Subject", "a\r\nBcc: x"), ("Subject", "a\nb"),
                                             ("Bad:Name", "v"), ("", "v"), ("X\r", "v")])
def test_fold_refuses_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        fold(name, value)


header_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=400
)


@given(value=header_text, width=st.integers(20, 200))
def test_fold_properties(value: str, width: int) -> None:
    folded = fold("X-Test", value, width)
    assert folded.endswith("\r\n")
    body = folded[:-2]
    # Unfolding (RFC 5322 2.2.3) gives back exactly what was folded.
    assert body.replace("\r\n", "") == f"X-Test: {value}"
    lines = body.split("\r\n")
    for line in lines[1:]:
        assert line[:1] in (" ", "\t")  # a continuation starts with whitespace
        assert line.strip(" \t")  # and is never whitespace only
    for line in lines:
        if len(line) > width:
            # Over-long only when there was no whitespace to fold at within the width.
            assert " " not in line[1:width + 1].lstrip(" \t") or line.startswith("X-Test:")


@given(st.binary(max_size=2000))
def test_header_helpers_never_raise_on_junk(data: bytes) -> None:
    section = header_section(data)
    assert data.startswith(section)
    header_names(section)
    added = missing_header_lines(data, hostname="mx.example.com", when=WHEN)
    assert added.isascii()
