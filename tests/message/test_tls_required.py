"""The TLS-Required header field (RFC 8689 3): only "No", in the header section, counts."""

from __future__ import annotations

import pytest

from mailprime.message.headers import MAX_HEADER_SECTION
from mailprime.message.tls_required import asks_no_tls_policy


@pytest.mark.parametrize(("message", "expected"), [
    (b"From: a@b\r\nTLS-Required: No\r\n\r\nbody\r\n", True),
    (b"tls-required:   nO  \r\nSubject: x\r\n\r\n", True),  # case-insensitive, WSP around
    (b"Subject: x\r\nTLS-Required:\r\n No\r\n\r\n", True),  # folded (RFC 5322 2.2.3)
    (b"Subject: x\nTLS-Required: No\n\nbody\n", True),  # bare LF line ends
    (b"TLS-Required: Yes\r\n\r\n", False),  # no other value is defined
    (b"TLS-Required: No thanks\r\n\r\n", False),
    (b"X-TLS-Required: No\r\n\r\n", False),
    (b"Subject: x\r\n\r\nTLS-Required: No\r\n", False),  # in the body
    (b"", False),
])
def test_detection(message: bytes, expected: bool) -> None:
    assert asks_no_tls_policy(message) is expected


def test_beyond_the_header_limit_is_not_read() -> None:
    filler = b"X-Pad: " + b"a" * 990 + b"\r\n"
    head = filler * (MAX_HEADER_SECTION // len(filler) + 1) + b"TLS-Required: No\r\n\r\n"
    assert not asks_no_tls_policy(head)
