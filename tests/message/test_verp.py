"""VERP return paths: encode/decode round trips, case folding, length, forgery and alteration,
the signed issue day."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.domain.address import Address
from mailprime.domain.ids import new_queue_id
from mailprime.message.verp import (
    MAX_PREFIX,
    TOKEN_LENGTH,
    VerpCodec,
    VerpError,
    check_prefix,
    utc_day,
)

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
QID = "0ZC1F4XKSNT6B7D8G9"  # 18 characters of new_queue_id's alphabet
MAX_RCPT = 2**48 - 1  # the token's recipient id field
NOON_2030_01_02 = 1893585600.0  # 2030-01-02T12:00:00Z


def test_round_trip_names_message_and_recipient() -> None:
    codec = VerpCodec([SECRET])
    address = codec.encode(QID, 42, "Bounce.A.Test")
    assert address is not None
    local, domain = address.split("@")
    assert domain == "bounce.a.test"
    assert local.startswith("bounces+") and len(local) == len("bounces+") + TOKEN_LENGTH
    target = codec.decode(address)
    assert target is not None
    assert (target.queue_id, target.recipient_id) == (QID, 42)


def test_token_is_lower_case_base32_and_deterministic() -> None:
    codec = VerpCodec([SECRET])
    token = codec.token(QID, 7)
    assert token is not None and token == codec.token(QID, 7)
    assert len(token) == TOKEN_LENGTH and token == token.lower()
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert base64.b32decode(token.upper())  # plain RFC 4648 base32, no padding needed


def test_case_changes_by_mtas_do_not_matter() -> None:
    codec = VerpCodec([SECRET])
    address = codec.encode(QID, 9, "a.test")
    assert address is not None
    for variant in (address.upper(), address.title(), f"<{address}>"):
        target = codec.decode(variant)
        assert target is not None and target.recipient_id == 9


def test_fits_rfc5321_local_part_and_address_parser() -> None:
    codec = VerpCodec([SECRET], prefix="x" * MAX_PREFIX)
    address = codec.encode(QID, MAX_RCPT, "a.test")
    assert address is not None
    local = address.split("@")[0]
    assert len(local) == 64  # RFC 5321 4.5.3.1.1, exactly at the limit
    Address.parse(address)  # our own parser (which enforces the limit) accepts it
    target = codec.decode(address)
    assert target is not None and target.recipient_id == MAX_RCPT


def test_prefix_limits() -> None:
    assert check_prefix("Bounces") == "bounces"
    for bad in ("", "x" * (MAX_PREFIX + 1), "a+b", ".x", "a..b", "bö", "a b"):
        with pytest.raises(VerpError):
            check_prefix(bad)


def test_secret_must_be_long_enough() -> None:
    with pytest.raises(VerpError):
        VerpCodec([b"short"])
    with pytest.raises(VerpError):
        VerpCodec([])


def test_forged_token_from_another_secret_is_rejected() -> None:
    forged = VerpCodec([OTHER]).encode(QID, 42, "a.test")
    assert forged is not None
    assert VerpCodec([SECRET]).decode(forged) is None


def test_altered_token_is_rejected_everywhere() -> None:
    codec = VerpCodec([SECRET])
    address = codec.encode(QID, 42, "a.test")
    assert address is not None
    local, domain = address.split("@")
    prefix, token = local.split("+")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for i in range(len(token)):
        for repl in (alphabet[(alphabet.index(token[i]) + 1) % 32], "1", "="):
            altered = f"{prefix}+{token[:i]}{repl}{token[i + 1:]}@{domain}"
            assert codec.decode(altered) is None, altered


def test_other_shapes_are_not_ours() -> None:
    codec = VerpCodec([SECRET])
    address = codec.encode(QID, 1, "a.test")
    assert address is not None
    token = address.split("+")[1].split("@")[0]
    assert not codec.is_candidate("bounces@a.test")
    assert not codec.is_candidate(f"other+{token}@a.test")
    assert not codec.is_candidate(f"bounces+{token[:-1]}@a.test")
    assert not codec.is_candidate(f"bounces+{token}")  # no domain
    assert codec.is_candidate(f"bounces+{'a' * TOKEN_LENGTH}@a.test")  # shape only
    assert codec.decode(f"bounces+{'a' * TOKEN_LENGTH}@a.test") is None


def test_rotated_secret_still_decodes_old_tokens() -> None:
    old = VerpCodec([SECRET]).encode(QID, 5, "a.test")
    assert old is not None
    rotated = VerpCodec([OTHER, SECRET])
    target = rotated.decode(old)
    assert target is not None and target.recipient_id == 5
    new = rotated.encode(QID, 5, "a.test")
    assert new is not None and new != old
    assert VerpCodec([SECRET]).decode(new) is None


def test_queue_ids_not_ours_get_no_token() -> None:
    codec = VerpCodec([SECRET])
    assert codec.token("SHORT", 1) is None
    assert codec.token("0" + QID, 1) is None  # a padded id new_queue_id never makes
    assert codec.token("0ZC1F4XKSNT6B7D8Ga", 1) is None  # lower case is outside the alphabet
    assert codec.token(QID, -1) is None
    assert codec.token(QID, MAX_RCPT + 1) is None
    assert codec.token(QID, 1, day=-1) is None
    assert codec.token(QID, 1, day=2**16) is None  # 2149-06-07: past the day field


@given(st.integers(min_value=0, max_value=MAX_RCPT))
def test_round_trip_any_recipient_and_fresh_queue_id(recipient_id: int) -> None:
    codec = VerpCodec([SECRET])
    qid = new_queue_id()
    address = codec.encode(qid, recipient_id, "a.test")
    assert address is not None
    target = codec.decode(address)
    assert target is not None and (target.queue_id, target.recipient_id) == (qid, recipient_id)


def test_the_issue_day_is_signed_and_read_back() -> None:
    now = [NOON_2030_01_02]
    codec = VerpCodec([SECRET], clock=lambda: now[0])
    assert codec.today() == utc_day(NOON_2030_01_02) == 21916  # days since 1970-01-01
    address = codec.encode(QID, 42, "a.test")
    assert address is not None
    target = codec.decode(address)
    assert target is not None and (target.recipient_id, target.day) == (42, 21916)
    assert codec.age_days(target) == 0
    now[0] += 31 * 86400
    assert codec.age_days(target) == 31
    # Another day makes another token; both verify, each with its own day.
    later = codec.encode(QID, 42, "a.test")
    assert later is not None and later != address
    again = codec.decode(later)
    assert again is not None and again.day == 21916 + 31
    old = codec.encode(QID, 42, "a.test", day=21000)
    assert old is not None
    decoded = codec.decode(old)
    assert decoded is not None and decoded.day == 21000


def test_a_version_1_token_does_not_verify() -> None:
    """The layout before the issue day (64-bit recipient id, tag "mailprime-verp-1") is not
    read as a token of today's layout: no transition, such tokens are refused."""
    payload = (17).to_bytes(12, "big") + (42).to_bytes(8, "big")
    tag = hmac.new(SECRET, b"mailprime-verp-1" + payload, hashlib.sha256).digest()[:10]
    token = base64.b32encode(payload + tag).decode().lower()
    assert len(token) == TOKEN_LENGTH
    assert VerpCodec([SECRET]).decode(f"bounces+{token}@a.test") is None
