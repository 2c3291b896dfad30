"""DKIM signing (message.dkim): RFC 8463's published example reproduced byte for byte (Ed25519 and
RSA signatures are both deterministic), the DKIM-Signature layout, key records, and what we sign
checked by two independent verifiers (dkimpy and OpenDKIM) over awkward messages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.message.dkim import (
    FOLD_WIDTH,
    DkimAlgorithm,
    DkimKeyError,
    SigningKey,
    from_domain,
    generate_private_key,
    is_valid_selector,
    load_private_key,
    public_key_record,
    sign_field,
    sign_message,
    signed_field_names,
    signed_header_data,
    split_message,
    txt_strings,
    zone_line,
)
from mailprime.message.dkim_canon import body_hash, split_fields
from tests.support.dkim_verifiers import (
    Verdict,
    dkimpy_verify,
    opendkim_unavailable,
    opendkim_verify,
    signatures,
)

# RFC 8463 Appendix A ----------------------------------------------------------------------------

RFC_ED25519_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC_RSA_KEY = """-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi
Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM
KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB
AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm
6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe
zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy
6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc
uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy
WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd
WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a
licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst
o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe
uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL
-----END RSA PRIVATE KEY-----
"""
RFC_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n\r\n"
)
RFC_BH = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
RFC_H = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]
# The two signature fields as published (one-space continuation lines), b= emptied.
RFC_UNSIGNED = {
    "brisbane": ("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
                 " d=football.example.com; i=@football.example.com;\r\n"
                 " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
                 " subject : date : message-id : from : subject : date;\r\n"
                 f" bh={RFC_BH};\r\n b="),
    "test": ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
             " d=football.example.com; i=@football.example.com;\r\n"
             " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
             " date : message-id : from : subject : date;\r\n"
             f" bh={RFC_BH};\r\n b="),
}
RFC_B = {
    "brisbane": "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==",
    "test": ("F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1t"
             "FOeS9mPYQTnGdaSGsgeefOsk2JzdA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8="),
}
RFC_ED25519_RECORD = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def rfc_keys() -> dict[str, SigningKey]:
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC_ED25519_SEED))
    return {"brisbane": SigningKey("football.example.com", "brisbane", ed),
            "test": SigningKey("football.example.com", "test", load_private_key(RFC_RSA_KEY))}


def test_rfc_8463_body_hash() -> None:
    assert base64.b64encode(body_hash(split_message(RFC_MESSAGE)[1])).decode() == RFC_BH


@pytest.mark.parametrize("selector", ["brisbane", "test"])
def test_rfc_8463_signatures_byte_exact(selector: str) -> None:
    """Same fields, same key, same signature field: our canonicalization, header hash and
    signing (Ed25519 over the SHA-256 digest; RSA PKCS#1 v1.5) give the RFC's b= exactly."""
    key = rfc_keys()[selector]
    fields = split_fields(split_message(RFC_MESSAGE)[0])
    signed = sign_field(key, signed_header_data(fields, RFC_H), RFC_UNSIGNED[selector])
    value = signed[len(RFC_UNSIGNED[selector]):]
    assert "".join(value.split()) == RFC_B[selector]


def test_rfc_8463_key_record() -> None:
    assert public_key_record(rfc_keys()["brisbane"].key) == RFC_ED25519_RECORD


def test_signed_data_takes_fields_from_the_bottom_up() -> None:
    fields = split_fields(b"From: a@x.test\r\nTo: first\r\nTo:  second \r\nSubject: s\r\n")
    names = signed_field_names(fields)
    assert names == ["from", "from", "subject", "to", "to"]  # From oversigned, To twice
    assert signed_header_data(fields, names) == (
        b"from:a@x.test\r\nsubject:s\r\nto:second\r\nto:first\r\n")


# Our own signatures ---------------------------------------------------------------------------

DOMAIN = "example.com"
RSA_KEY = SigningKey(DOMAIN, "rsa1", load_private_key(generate_private_key(DkimAlgorithm.RSA_SHA256)))
ED_KEY = SigningKey(DOMAIN, "ed1", load_private_key(generate_private_key(DkimAlgorithm.ED25519_SHA256)))
KEYS = (ED_KEY, RSA_KEY)
RECORDS = {f"{k.selector}._domainkey.{DOMAIN}": public_key_record(k.key) for k in KEYS}
TIMESTAMP = 1_750_000_000


def signed(message: bytes, keys: tuple[SigningKey, ...] = KEYS) -> bytes:
    return sign_message(message, keys, TIMESTAMP) + message


LONG_SUBJECT = "Subject: " + " ".join(f"word{i}" for i in range(120))
ATTACHMENT = base64.encodebytes(bytes(range(256)) * 40).replace(b"\n", b"\r\n")

AWKWARD: dict[str, bytes] = {
    "plain": b"From: Joe <joe@example.com>\r\nTo: a@b.test\r\nSubject: hi\r\n\r\nHello.\r\n",
    "odd whitespace": (b"From:   Joe \t <joe@example.com>  \r\nTo:\ta@b.test\r\nSubject:  spaced\t \t"
                       b"out  \r\n\r\n  lead\tand   inner  \r\ntrail \t \r\n\t\r\n"),
    "long folded headers": (b"From: Joe <joe@example.com>\r\n"
                            + "\r\n ".join(LONG_SUBJECT[i:i + 70] for i in range(0, len(LONG_SUBJECT), 70)
                                           ).encode()
                            + b"\r\nTo: " + b",\r\n\t".join(b"user%d@b.test" % i for i in range(60))
                            + b"\r\nReferences: " + b"\r\n ".join(b"<%d@x.test>" % i for i in range(40))
                            + b"\r\n\r\nbody\r\n"),
    "8-bit body": ("From: Jöe <joe@example.com>\r\nTo: a@b.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                   "Grüße aus Köln — ça va? 日本語\r\n").encode(),
    "attachment": (b"From: joe@example.com\r\nTo: a@b.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
                   b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
                   b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n"
                   b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                   b"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n" + ATTACHMENT
                   + b"--b1--\r\n"),
    "empty body": b"From: joe@example.com\r\nSubject: nothing\r\n\r\n",
    "no body at all": b"From: joe@example.com\r\nSubject: nothing\r\n",
    "trailing blank lines": b"From: joe@example.com\r\nSubject: t\r\n\r\ntext\r\n\r\n \r\n\t\r\n\r\n",
    "marketing headers": (b"From: News <news@example.com>\r\nSender: bounces@example.com\r\n"
                          b"Reply-To: help@example.com\r\nTo: a@b.test\r\nCc: c@b.test\r\n"
                          b"Subject: Sale\r\nDate: Tue, 07 Jan 2025 10:00:00 +0000\r\n"
                          b"Message-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
                          b"Content-Type: text/html; charset=utf-8\r\n"
                          b"List-Unsubscribe: <https://example.com/u/1>, <mailto:u@example.com>\r\n"
                          b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                          b"Feedback-ID: c1:news:mp:example\r\nX-Not-Signed: 1\r\n\r\n"
                          b"<html>\r\n  <body>\r\n    <p>Hi</p>\r\n  </body>\r\n</html>\r\n"),
}
ALL_PASS = [Verdict("rsa1", "rsa-sha256", "pass"), Verdict("ed1", "ed25519-sha256", "pass")]


@pytest.mark.parametrize("name", list(AWKWARD))
def test_dkimpy_verifies_both_signatures(name: str) -> None:
    assert dkimpy_verify(signed(AWKWARD[name]), RECORDS) == ALL_PASS


@pytest.mark.parametrize("name", list(AWKWARD))
def test_opendkim_verifies_both_signatures(name: str, tmp_path: Path) -> None:
    if reason := opendkim_unavailable():
        pytest.skip(reason)
    assert opendkim_verify(signed(AWKWARD[name]), RECORDS, tmp_path) == ALL_PASS


def test_verifiers_catch_tampering(tmp_path: Path) -> None:
    """The verifiers are not rubber stamps: a changed body, a changed signed field and a second
    From (oversigned) fail both signatures; an unsigned field may be added."""
    message = signed(AWKWARD["marketing headers"])
    changed_body = message.replace(b"<p>Hi</p>", b"<p>Ho</p>")
    changed_subject = message.replace(b"Subject: Sale", b"Subject: Sold")
    second_from = message.replace(b"From: News", b"From: Eve <eve@evil.test>\r\nFrom: News")
    unsigned_field = message.replace(b"X-Not-Signed: 1", b"X-Not-Signed: 2\r\nX-Other: 3")
    fails = [Verdict("rsa1", "rsa-sha256", "fail"), Verdict("ed1", "ed25519-sha256", "fail")]
    for bad in (changed_body, changed_subject, second_from):
        assert dkimpy_verify(bad, RECORDS) == fails
    assert dkimpy_verify(unsigned_field, RECORDS) == ALL_PASS
    if opendkim_unavailable() is None:
        results = opendkim_verify(changed_body, RECORDS, tmp_path / "body")
        assert [v.result for v in results] == ["fail", "fail"]
        results = opendkim_verify(second_from, RECORDS, tmp_path / "from")
        assert all(v.result != "pass" for v in results), results


def test_signature_field_layout() -> None:
    message = AWKWARD["long folded headers"]
    fields = sign_message(message, KEYS, TIMESTAMP)
    assert fields.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert fields.count(b"DKIM-Signature:") == 2 and fields.endswith(b"\r\n")
    assert all(len(line) <= FOLD_WIDTH for line in fields.split(b"\r\n"))
    rsa_tags, ed_tags = signatures(fields + message)
    assert (rsa_tags[b"a"], ed_tags[b"a"]) == (b"rsa-sha256", b"ed25519-sha256")
    assert rsa_tags[b"t"] == b"1750000000" and rsa_tags[b"d"] == b"example.com"
    names = b"".join(rsa_tags[b"h"].split()).split(b":")
    assert names == [b"from", b"from", b"subject", b"to", b"references"]


def test_only_present_fields_are_signed_and_from_is_oversigned() -> None:
    tags = signatures(signed(AWKWARD["marketing headers"]))[0]
    names = b"".join(tags[b"h"].split()).decode().split(":")
    assert names == ["from", "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
                     "mime-version", "content-type", "list-unsubscribe", "list-unsubscribe-post",
                     "feedback-id"]


SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
WSP = st.sampled_from([" ", "\t", "  ", " \t "])


@settings(max_examples=60)
@given(subject=st.lists(st.tuples(SAFE_TEXT, WSP), max_size=6),
       body=st.lists(st.tuples(SAFE_TEXT, st.sampled_from(["", " ", "\t", "  \t"])), max_size=10),
       blank_lines=st.integers(min_value=0, max_value=3))
def test_dkimpy_verifies_generated_messages(subject: list[tuple[str, str]],
                                             body: list[tuple[str, str]], blank_lines: int) -> None:
    folded = "\r\n ".join(text + space for text, space in subject)
    text = "".join(f"{line}{trail}\r\n" for line, trail in body) + "\r\n" * blank_lines
    message = (f"From: <joe@example.com>\r\nSubject: {folded}\r\nTo: a@b.test\r\n\r\n{text}"
               ).encode()
    assert dkimpy_verify(signed(message, (ED_KEY,)), RECORDS) == [ALL_PASS[1]]


# Keys and records --------------------------------------------------------------------------------

def test_from_domain() -> None:
    def domain(value: bytes) -> str | None:
        return from_domain(split_fields(b"From: " + value + b"\r\n"))

    assert domain(b'"Joe, Jr." <Joe@Example.COM.>') == "example.com"
    assert domain(b"joe@example.com (Joe)") == "example.com"
    assert domain(b"Joe\r\n <joe@sub.example.com>") == "sub.example.com"
    assert domain(b"a@one.test, b@two.test") == "one.test"
    assert domain("Jöe <jöe@bücher.example>".encode()) == "xn--bcher-kva.example"
    assert domain(b"undisclosed") is None
    assert from_domain(split_fields(b"Subject: no from\r\n")) is None


def test_records_and_zone_lines() -> None:
    rsa_record = public_key_record(RSA_KEY.key)
    assert rsa_record.startswith("v=DKIM1; k=rsa; p=MIIBIjANBg")  # 2048-bit SubjectPublicKeyInfo
    strings = txt_strings(rsa_record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings) and "".join(strings) == rsa_record
    line = zone_line(DOMAIN, "rsa1", rsa_record)
    assert line == f'rsa1._domainkey.{DOMAIN}. IN TXT "{strings[0]}" "{strings[1]}"'
    assert isinstance(RSA_KEY.key, rsa.RSAPrivateKey) and RSA_KEY.key.key_size == 2048


# A throw-away 512-bit key (openssl genrsa 512): RFC 8301 3.2 forbids signing with it.
WEAK_RSA_KEY = """-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAsBYw4m88voZXYuhq
9G6FaUkRaf12F+ATArFhItBrQsYXTTIJTJzCCEnz/t3W14j4GdtvLUkaBvsodXRo
kr75PwIDAQABAkEAo8BfQZQUt1GTXoWpQRquspSivyBYfCeDRlPSc1/C/9pQkbje
JTC9vz1XwEZMtfOBeQvIVUbCKqQLTzFPLOhAQQIhANxsN4Ny+caKFvqSiT3QOm1J
SbIxJqg/e7THBx+aGmcvAiEAzIIGnL4HEy77jtWcLXIhqKTYiPh5v6y9e/N2dQ7k
CvECIHvmAFZM/IVS/ZOfZrFuKElh1qDo69fKx1hYP3LOBmVVAiB+A9UNOm7jnDy4
C9obistAvqsK44kp2cg8m42vnchZEQIgZQtDxIXFuXJVYcCkQp4Z8aZSk6/u0fqK
Iw1EZm/owwU=
-----END PRIVATE KEY-----
"""


def test_load_private_key_refuses_what_cannot_sign() -> None:
    with pytest.raises(DkimKeyError, match="PEM"):
        load_private_key("not a key")
    with pytest.raises(DkimKeyError, match="512 bits"):
        load_private_key(WEAK_RSA_KEY)  # cryptography will not even generate one this short
    ecdsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(DkimKeyError, match="RSA or Ed25519"):
        load_private_key(ecdsa)


def test_selectors() -> None:
    assert is_valid_selector("mp202607-rsa") and is_valid_selector("a.b-c")
    for bad in ("", "-x", "x-", "a_b", "a..b", "a" * 64, "ü"):
        assert not is_valid_selector(bad), bad
