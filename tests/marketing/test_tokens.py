"""Signed link tokens (marketing.tokens): pure, no sockets."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, RecipientId
from mailprime.marketing.tokens import (
    MAX_ADDRESS,
    MAX_TOKEN,
    CampaignRecipient,
    ClickToken,
    LinkToken,
    MessageRecipient,
    OpenToken,
    TokenError,
    TokenSigner,
    TrackToken,
    UnsubscribeToken,
    check_url,
    key_id,
)
from mailprime.message.keyed_mac import fresh_tag

KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
CAMPAIGN = CampaignRecipient(CampaignId(7), ContactId(123456))
MESSAGE = MessageRecipient(QueueId("0ZC1F4XKSNT6B7D8G9"), RecipientId(42))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

TOKENS = [
    OpenToken(CAMPAIGN),
    OpenToken(MESSAGE),
    ClickToken(CAMPAIGN, "https://shop.example.com/p?id=1&utm=x#top"),
    ClickToken(MESSAGE, "http://example.org/"),
    UnsubscribeToken(CAMPAIGN, "bob@example.com", "news.example.com", ListId(3)),
    UnsubscribeToken(MESSAGE, "carol@example.org"),
    TrackToken(CAMPAIGN),
    TrackToken(MESSAGE),
    LinkToken(CampaignId(7), "https://shop.example.com/p?id=1&utm=x#top"),
]
AnyToken = OpenToken | ClickToken | UnsubscribeToken | TrackToken | LinkToken


@pytest.mark.parametrize("token", TOKENS, ids=lambda t: type(t).__name__)
def test_round_trip_and_url_safe(token: AnyToken) -> None:
    signer = TokenSigner([KEY])
    text = signer.sign(token)
    assert set(text) <= set(ALPHABET) and "=" not in text
    assert signer.verify(text, type(token)) == token


def test_a_token_is_only_good_for_its_purpose() -> None:
    signer = TokenSigner([KEY])
    opened = signer.sign(OpenToken(CAMPAIGN))
    click = signer.sign(ClickToken(CAMPAIGN, "https://example.com/"))
    assert signer.verify(opened, ClickToken) is None
    assert signer.verify(opened, UnsubscribeToken) is None
    assert signer.verify(click, OpenToken) is None
    # The two halves of a two-part click link are neither each other nor the older kinds.
    track = signer.sign(TrackToken(CAMPAIGN))
    link = signer.sign(LinkToken(CampaignId(7), "https://example.com/"))
    for text, wrong in ((track, OpenToken), (track, LinkToken), (track, ClickToken),
                        (link, TrackToken), (link, ClickToken), (opened, TrackToken),
                        (click, LinkToken)):
        assert signer.verify(text, wrong) is None  # type: ignore[type-var]


def test_another_secret_does_not_verify() -> None:
    text = TokenSigner([KEY]).sign(OpenToken(CAMPAIGN))
    assert TokenSigner([OLD_KEY]).verify(text, OpenToken) is None


def test_rotation_keeps_old_links_working_and_signs_with_the_newest() -> None:
    old_link = TokenSigner([OLD_KEY]).sign(UnsubscribeToken(CAMPAIGN, "bob@example.com"))
    rotated = TokenSigner([KEY, OLD_KEY])
    assert rotated.verify(old_link, UnsubscribeToken) is not None
    new_link = rotated.sign(OpenToken(CAMPAIGN))
    raw = base64.urlsafe_b64decode(new_link + "=" * (-len(new_link) % 4))
    assert raw[1:3] == key_id(KEY)
    # Once the old key leaves the file, its links stop working.
    assert TokenSigner([KEY]).verify(old_link, UnsubscribeToken) is None


@settings(max_examples=300)
@given(index=st.integers(min_value=0), replacement=st.sampled_from(ALPHABET),
       which=st.integers(min_value=0, max_value=len(TOKENS) - 1))
def test_any_altered_character_is_refused(index: int, replacement: str, which: int) -> None:
    token = TOKENS[which]
    signer = TokenSigner([KEY])
    text = signer.sign(token)
    i = index % len(text)
    if text[i] == replacement:
        return
    altered = text[:i] + replacement + text[i + 1:]
    assert signer.verify(altered, type(token)) is None


@settings(max_examples=200)
@given(st.text(alphabet=ALPHABET + "=.%/", max_size=200))
def test_garbage_is_refused_without_error(text: str) -> None:
    assert TokenSigner([KEY]).verify(text, OpenToken) is None


def test_truncated_extended_and_oversized_tokens_are_refused() -> None:
    signer = TokenSigner([KEY])
    text = signer.sign(TOKENS[2])
    for bad in (text[:-1], text + "A", text[1:], "", "A" * (MAX_TOKEN + 1)):
        assert signer.verify(bad, ClickToken) is None


def test_click_targets_must_be_absolute_http_urls() -> None:
    for bad in ("javascript:alert(1)", "//evil.example/", "/relative", "ftp://x.example/",
                "https://ex ample.com/", "https://example.com/\r\nSet-Cookie: x=1",
                "https://" + "a" * 2050 + ".com/", "https:///nohost"):
        with pytest.raises(TokenError):
            check_url(bad)
        with pytest.raises(TokenError):
            TokenSigner([KEY]).sign(ClickToken(CAMPAIGN, bad))
        with pytest.raises(TokenError):
            TokenSigner([KEY]).sign(LinkToken(CampaignId(7), bad))


def test_short_secrets_are_refused() -> None:
    with pytest.raises(TokenError):
        TokenSigner([b"short"])
    with pytest.raises(TokenError):
        TokenSigner([])


def test_ids_are_not_enumerable_the_tag_depends_on_every_field() -> None:
    signer = TokenSigner([KEY])
    a = signer.sign(OpenToken(CampaignRecipient(CampaignId(7), ContactId(1))))
    b = signer.sign(OpenToken(CampaignRecipient(CampaignId(7), ContactId(2))))
    # Same length, different tags: knowing one link says nothing of the next contact's.
    assert len(a) == len(b) and a[-21:] != b[-21:]


def test_signing_is_the_documented_hmac() -> None:
    """sign() copies a keyed HMAC instead of keying one per token: the same tag as fresh_tag."""
    from mailprime.marketing import tokens

    signer = TokenSigner([KEY, OLD_KEY])
    for token in TOKENS:
        text = signer.sign(token)
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        head = raw[:-tokens.TAG_OCTETS]
        assert raw[-tokens.TAG_OCTETS:] == fresh_tag(KEY, tokens._LABEL, head, tokens.TAG_OCTETS)
        assert head[1:3] == key_id(KEY)


def test_a_link_token_names_no_recipient_and_is_canonical() -> None:
    signer = TokenSigner([KEY])
    url = "https://shop.example.com/p?id=1"
    a = signer.sign(LinkToken(CampaignId(7), url))
    assert a == signer.sign(LinkToken(CampaignId(7), url))  # the same for every recipient
    assert a != signer.sign(LinkToken(CampaignId(8), url))
    raw = base64.urlsafe_b64decode(a + "=" * (-len(a) % 4))
    # An unknown scope octet, signed with the right key, is still refused.
    from mailprime.marketing import tokens

    head = raw[:4] + b"\x02" + raw[5:-tokens.TAG_OCTETS]
    forged_tag = fresh_tag(KEY, tokens._LABEL, head, tokens.TAG_OCTETS)
    forged = base64.urlsafe_b64encode(head + forged_tag).decode().rstrip("=")
    assert signer.verify(forged, LinkToken) is None


# Tokens as they are in mail already sent: whatever sign() is made of, these strings (same HMAC
# input, same encoding) must come out for these keys and fields, and must keep verifying.
PINNED = [
    "ARiIAQEHwMQHSK9pP0pFY0UVvpjCGM96OQ",
    "ARiIAQISMFpDMUY0WEtTTlQ2QjdEOEc5KgFPoYQdk6Sb2xhV6mXhu0o",
    "ARiIAgEHwMQHKWh0dHBzOi8vc2hvcC5leGFtcGxlLmNvbS9wP2lkPTEmdXRtPXgjdG9wFh0Ky1GyhXDMDbAnA3_b7Q",
    "ARiIAgISMFpDMUY0WEtTTlQ2QjdEOEc5KhNodHRwOi8vZXhhbXBsZS5vcmcvO64HVadxlSyZlA64Z4RfNg",
    "ARiIAwEHwMQHD2JvYkBleGFtcGxlLmNvbRBuZXdzLmV4YW1wbGUuY29tA0hJbmJ47TTZ8kORfxdGWEs",
    "ARiIAwISMFpDMUY0WEtTTlQ2QjdEOEc5KhFjYXJvbEBleGFtcGxlLm9yZwAA_hGMKcT7lbORwwDvFomgZw",
    "ARiIBQEHwMQHb-ueRvjrVYYgb0KUvnUC5A",
    "ARiIBQISMFpDMUY0WEtTTlQ2QjdEOEc5KrU6VTNVIBJf188AV-BgYbg",
    "ARiIBgEHKWh0dHBzOi8vc2hvcC5leGFtcGxlLmNvbS9wP2lkPTEmdXRtPXgjdG9wKL3XYq1hV1w6dHCDRhAefg",
]


def test_tokens_are_pinned_byte_for_byte() -> None:
    signer = TokenSigner([KEY, OLD_KEY])
    for token, text in zip(TOKENS, PINNED, strict=True):
        assert signer.sign(token) == text
        assert signer.verify(text, type(token)) == token


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
       st.emails().map(lambda a: a[:MAX_ADDRESS]), st.sampled_from(["", "News.A.Test", "b.test"]),
       st.none() | st.integers(1, 2**40).map(ListId))
@settings(max_examples=200, deadline=None)
def test_a_campaigns_recipient_tokens_are_what_sign_writes(
        campaign: int, contact: int, address: str, domain: str, list_id: ListId | None) -> None:
    """RecipientTokens works out the shared octets once: the same tokens as sign(), octet for
    octet (varints of every length, upper-case addresses and domains lowered)."""
    signer = TokenSigner([KEY, OLD_KEY])
    tokens = signer.recipients(CampaignId(campaign), domain, list_id)
    subject = CampaignRecipient(CampaignId(campaign), ContactId(contact))
    assert tokens.track(ContactId(contact)) == signer.sign(TrackToken(subject))
    address = address.upper() if contact % 2 else address
    assert tokens.unsubscribe(ContactId(contact), address) == signer.sign(
        UnsubscribeToken(subject, address, domain, list_id))
    with pytest.raises(TokenError):
        tokens.track(ContactId(-1))
