"""BINARY[part] and BINARY.SIZE (RFC 3516, RFC 9051 6.4.5) and the transfer-encoding decoders.
Sizes recorded from Dovecot 2.3.19 where it decodes; where it refuses, the lenient answers that
RFC 2045 asks readers for."""

from __future__ import annotations

from mailprime.message.imap_fetch import binary_section, binary_size, decode_base64, decode_transfer_encoding
from mailprime.message.mime_tree import parse_message
from tests.message.test_imap_fetch import MIXED_RELATED, crlf, section


def binary(message: bytes, *path: int) -> bytes | None:
    return binary_section(message, parse_message(message), path)


def test_binary_of_base64_quoted_printable_and_identity_parts() -> None:
    tree = parse_message(MIXED_RELATED)
    assert binary(MIXED_RELATED, 2) == bytes(range(256)) * 3
    assert binary(MIXED_RELATED, 1, 1) == (
        "café naïve — long line " + "x" * 100 + "\r\ntrailing space  \u0020\r\nend=sign\r\n").encode()
    assert binary(MIXED_RELATED, 1, 2, 2)[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[index]
    assert binary(MIXED_RELATED, 1, 2, 1) == section(MIXED_RELATED, "1.2.1")
    assert binary(MIXED_RELATED, 3, 1) == "Grüße aus München".encode("latin-1")
    # Sizes as Dovecot reports them (BINARY.SIZE[1.1] 158, [2] 768, [3.1] 17, [1.2.2] 70).
    sizes = [binary_size(MIXED_RELATED, tree, p) for p in ((1, 1), (2,), (3, 1), (1, 2, 2))]
    assert sizes == [158, 768, 17, 70]


def test_binary_of_containers_and_whole_message_is_as_stored() -> None:
    # Dovecot re-encodes the parts inside a multipart or message to binary; RFC 2045 6.4 allows
    # containers only identity encodings, so we return them as stored.
    assert binary(MIXED_RELATED) == MIXED_RELATED
    assert binary(MIXED_RELATED, 3) == section(MIXED_RELATED, "3")
    assert binary(MIXED_RELATED, 9) == b""


QP_AND_BASE64 = crlf("""Content-Type: multipart/mixed; boundary=b

--b
Content-Transfer-Encoding: quoted-printable

hello=
bar=20=20
foo=09bar   \t
foo=3D=3d =XY soft=
end
--b
Content-Transfer-Encoding: x-uuencode

begin 644 x
--b
Content-Transfer-Encoding: BASE64

aGVs bG8g
d29y
bGQ
--b
Content-Transfer-Encoding: Binary

raw
--b
Content-Transfer-Encoding: base64

AAEC=ignored after the pad
--b--
""")


def test_binary_is_lenient_and_refuses_unknown_encodings() -> None:
    # Dovecot answers NO [PARSE] for the "=XY" and fails on the unpadded base64; RFC 2045 6.7
    # (note) and 6.8 ask readers to be robust, which is what these answers are.
    assert binary(QP_AND_BASE64, 1) == b"hellobar  \r\nfoo\tbar\r\nfoo== =XY softend"
    assert binary(QP_AND_BASE64, 2) is None
    assert binary_size(QP_AND_BASE64, parse_message(QP_AND_BASE64), (2,)) is None
    assert binary(QP_AND_BASE64, 3) == b"hello world"
    assert binary(QP_AND_BASE64, 4) == b"raw"
    assert binary(QP_AND_BASE64, 5) == b"\x00\x01\x02"


def test_decoders() -> None:
    assert decode_transfer_encoding(b"abc", "8BIT") == b"abc"
    assert decode_transfer_encoding(b"abc", "uuencode") is None
    assert decode_base64(b"QQ") == b"A"
    assert decode_base64(b"QUJD\r\nRA=") == b"ABCD"
    assert decode_base64(b"Q") == b""
    assert decode_base64(b"!!!") == b""

