"""Signed Message-IDs (message.msgid_token): the layout byte for byte, round trips, forgery and
alteration, key rotation, how a reply's In-Reply-To/References are read (order, bounds), and
fuzzing of hostile field values."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.domain.ids import CampaignId, ContactId, QueueId, new_queue_id
from mailprime.message.msgid_token import (
    MAX_CANDIDATES,
    MAX_FIELD,
    TOKEN_LENGTH,
    CampaignOrigin,
    MsgIdCodec,
    MsgIdTokenError,
    QueueOrigin,
    Reference,
)

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
NONCE = bytes(range(0xA0, 0xA7))
QID = QueueId("0ZC1F4XKSNT6B7D8G9")  # 18 characters of new_queue_id's alphabet
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def codec(*secrets: bytes) -> MsgIdCodec:
    return MsgIdCodec(list(secrets or (SECRET,)), nonce=lambda n: NONCE[:n])


def expected(payload: bytes, secret: bytes = SECRET) -> str:
    """The token written out from the layout in the module doc, independently of the codec."""
    tag = hmac.new(secret, b"mailprime-msgid-1" + payload, hashlib.sha256).digest()[:10]
    return base64.b32encode(payload + tag).decode("ascii").lower()


def test_campaign_message_id_byte_for_byte() -> None:
    made = codec().make(CampaignOrigin(CampaignId(7), ContactId(42)), "News.A.Test.")
    payload = b"\x01" + (7).to_bytes(6, "big") + (42).to_bytes(6, "big") + NONCE
    assert made == f"<mp1.{expected(payload)}@news.a.test>"
    # Pinned: a change of layout, label or encoding shows here (old ids in mailboxes must verify).
    assert made == "<mp1.aeaaaaaaaadqaaaaaaacvifbukr2jjngktfwxpqbfjg2u7an@news.a.test>"


def test_queue_message_id_byte_for_byte() -> None:
    made = codec().make(QueueOrigin(QID), "a.test")
    number = 0
    for ch in QID:
        number = number * 31 + "0123456789BCDFGHJKLMNPQRSTVWXYZ".index(ch)
    payload = b"\x02" + number.to_bytes(12, "big") + NONCE
    assert made == f"<mp1.{expected(payload)}@a.test>"
    assert made == "<mp1.aiaberafutg7mr24bp7h3ifbukr2jjngyeey5r6mxzzcntgp@a.test>"


def test_round_trips_and_shape() -> None:
    c = MsgIdCodec([SECRET])
    for origin in (CampaignOrigin(CampaignId(1), ContactId(0)),
                   CampaignOrigin(CampaignId(2**48 - 1), ContactId(2**48 - 1)),
                   QueueOrigin(QID), QueueOrigin(new_queue_id())):
        made = c.make(origin, "a.test")
        assert made is not None
        token = made[len("<mp1."):made.index("@")]
        assert len(token) == TOKEN_LENGTH and set(token) <= set(BASE32)
        assert c.read(made) == origin
        assert c.read(made.upper()) == origin  # a tool that folds case does no harm


def test_ids_are_unique_per_message() -> None:
    c = MsgIdCodec([SECRET])
    origin = CampaignOrigin(CampaignId(3), ContactId(4))
    made = {c.make(origin, "a.test") for _ in range(50)}
    assert len(made) == 50  # 56 random bits each


def test_what_cannot_be_signed_gives_none() -> None:
    c = codec()
    assert c.make(CampaignOrigin(CampaignId(2**48), ContactId(1)), "a.test") is None
    assert c.make(CampaignOrigin(CampaignId(1), ContactId(-1)), "a.test") is None
    for qid in ("short", "0" + QID, QID.lower(), "A" * 18, "Z" * 30):
        assert c.make(QueueOrigin(QueueId(qid)), "a.test") is None
    for domain in ("", "a test", "a..test", "-a.test", "a.test>", "\u00e9.test", "x" * 254):
        assert c.make(QueueOrigin(QID), domain) is None


def test_secrets_are_checked() -> None:
    with pytest.raises(MsgIdTokenError):
        MsgIdCodec([])
    with pytest.raises(MsgIdTokenError):
        MsgIdCodec([b"short"])
    with pytest.raises(MsgIdTokenError):
        MsgIdCodec([SECRET], nonce=lambda n: b"x").token(QueueOrigin(QID))


def test_forged_and_altered_ids_do_not_verify() -> None:
    made = codec().make(CampaignOrigin(CampaignId(7), ContactId(42)), "a.test")
    assert made is not None
    assert MsgIdCodec([OTHER]).read(made) is None  # signed with a key we do not hold
    token = made[len("<mp1."):made.index("@")]
    for i, ch in enumerate(token):  # every single-character change is refused
        for other in (c for c in BASE32 if c != ch):
            assert codec().verify(token[:i] + other + token[i + 1:]) is None, (i, other)
    assert codec().verify(token[:-1]) is None
    assert codec().verify(token + "a") is None
    assert codec().verify("1" * TOKEN_LENGTH) is None  # not base32


def test_rotated_keys_still_verify() -> None:
    old = codec(OTHER).make(QueueOrigin(QID), "a.test")
    assert old is not None
    assert MsgIdCodec([SECRET, OTHER]).read(old) == QueueOrigin(QID)
    assert MsgIdCodec([SECRET]).read(old) is None
    new = MsgIdCodec([SECRET, OTHER]).make(QueueOrigin(QID), "a.test")
    assert new is not None and MsgIdCodec([SECRET]).read(new) == QueueOrigin(QID)


def test_find_origin_prefers_in_reply_to_then_the_newest_reference() -> None:
    c = codec()
    first = c.make(CampaignOrigin(CampaignId(1), ContactId(1)), "a.test")
    second = c.make(CampaignOrigin(CampaignId(2), ContactId(2)), "a.test")
    parent = c.make(QueueOrigin(QID), "a.test")
    assert first and second and parent
    refs = f"{first}\r\n {second} <other@elsewhere.test>"
    assert c.find_origin(parent, refs) == Reference(parent, QueueOrigin(QID))
    assert c.find_origin(None, refs) == Reference(second, CampaignOrigin(CampaignId(2),
                                                                         ContactId(2)))
    assert c.find_origin("<random@elsewhere.test>", f"{first} <x@y>") == Reference(
        first, CampaignOrigin(CampaignId(1), ContactId(1)))
    # Comments and folding whitespace around the id (RFC 5322 3.6.4 CFWS): found, and
    # reported without the whitespace.
    spaced = parent.replace("<", "< ").replace(">", " >")
    found = c.find_origin(f"(reply) {spaced}", None)
    assert found is not None and found.message_id == parent
    assert c.find_origin(None, None) is None
    assert c.find_origin("", "<a@b> <c@d>") is None


def test_a_forged_id_of_our_shape_is_skipped() -> None:
    c = codec()
    real = c.make(QueueOrigin(QID), "a.test")
    forged = codec(OTHER).make(QueueOrigin(QID), "a.test")
    assert real and forged
    assert c.find_origin(forged, real) == Reference(real, QueueOrigin(QID))
    assert c.find_origin(forged, None) is None


def test_hostile_references_are_bounded() -> None:
    c = codec()
    real = c.make(QueueOrigin(QID), "a.test")
    assert real is not None
    fake = f"<mp1.{'a' * TOKEN_LENGTH}@a.test>"
    # More ids of our shape than are verified: the real one, oldest, is not reached.
    refs = " ".join([real] + [fake.replace("aaaa", f"{i:04d}".translate(
        str.maketrans("0123456789", "abcdefghij")), 1) for i in range(MAX_CANDIDATES)])
    assert c.find_origin(None, refs) is None
    # Within the budget it is found (repeats of one fake id count once).
    assert c.find_origin(None, " ".join([real] + [fake] * 500)) == Reference(real, QueueOrigin(QID))
    # Past MAX_FIELD characters nothing is read.
    padding = "<x@y> " * (MAX_FIELD // 6 + 1)
    assert c.find_origin(padding + real, None) is None
    assert c.find_origin(real + padding, None) == Reference(real, QueueOrigin(QID))
    # A field of megabytes costs a bounded amount of work and finds nothing.
    assert c.find_origin("<mp1." * 500_000, "mp1." + "a" * 2_000_000) is None


@FUZZ
@given(st.text(max_size=3000), st.text(max_size=3000))
def test_arbitrary_field_values_never_raise(in_reply_to: str, references: str) -> None:
    found = codec().find_origin(in_reply_to, references)
    assert found is None  # nothing random carries a tag made with our key


@FUZZ
@given(st.integers(0, 2**48 - 1), st.integers(0, 2**48 - 1), st.binary(min_size=7, max_size=7),
       st.sampled_from(["a.test", "mail.example.com", "x-1.y"]),
       st.lists(st.sampled_from(["<a@b>", "(c)", " ", "\r\n ", "<mp1.zz@q>"]), max_size=6))
def test_any_campaign_origin_round_trips_inside_noise(campaign: int, contact: int, nonce: bytes,
                                                      domain: str, noise: list[str]) -> None:
    c = MsgIdCodec([SECRET], nonce=lambda n: nonce)
    origin = CampaignOrigin(CampaignId(campaign), ContactId(contact))
    made = c.make(origin, domain)
    assert made is not None
    found = c.find_origin("".join(noise), "".join(noise) + made + "".join(noise))
    assert found == Reference(made, origin)


@FUZZ
@given(st.text(alphabet=BASE32 + BASE32.upper(), min_size=TOKEN_LENGTH, max_size=TOKEN_LENGTH))
def test_random_tokens_of_our_shape_do_not_verify(token: str) -> None:
    assert codec().verify(token) is None


def test_the_token_text_is_rfc4648_base32_lower_cased() -> None:
    import base64
    import os

    from mailprime.message import msgid_token

    for raw in (bytes(30), b"\xff" * 30, *(os.urandom(30) for _ in range(200))):
        assert msgid_token._b32_token(raw) == base64.b32encode(raw).decode("ascii").lower()
