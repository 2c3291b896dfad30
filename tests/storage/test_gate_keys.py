"""The send gate's shortcut for its contacts' keys (storage.sql.recipients._contact_ids): an ASCII
address of at most MAX_PATH octets that, lower-cased, is a key `email_key` made is an address
whose key `email_key` makes is exactly that, so the gate need not parse it. Held here against
every kind of address and every change of case, bracket, space and dot around one."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailprime.domain.address import MAX_PATH
from mailprime.domain.errors import InvalidAddress
from mailprime.storage.sql.audience import email_key

LOCAL = st.one_of(
    st.text(alphabet="abcXYZ019.!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=70),
    st.text(alphabet='abC "\\@<>.', min_size=0, max_size=12).map(lambda t: f'"{t}"'),
    st.text(min_size=1, max_size=8),  # anything at all, non-ASCII included
)
LABEL = st.one_of(st.text(alphabet="abcXYZ09-", min_size=1, max_size=64),
                  st.sampled_from(["müller", "bücher", "日本", "xn--mller-kva", "ÉCOLE", ""]))
DOMAIN = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["[192.0.2.1]", "[IPv6:2001:db8::1]", "example.com.", " example.com"]),
    st.integers(min_value=60, max_value=250).map(lambda n: "a" * 60 + "." + "b" * (n - 61)),
)


@st.composite
def variants(draw: st.DrawFn, key: str) -> str:
    """`key` with its letters' case changed at random, sometimes wrapped."""
    flips = draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    text = "".join(ch.upper() if flip else ch for ch, flip in zip(key, flips, strict=True))
    wrap = draw(st.sampled_from(["{}", "<{}>", " {}", "{} ", "{}.", "<<{}>>", "{}\t"]))
    return wrap.format(text)


@settings(max_examples=1000, deadline=None)
@given(local=LOCAL, domain=DOMAIN, data=st.data())
def test_a_lower_cased_key_is_its_own_key(local: str, domain: str, data: st.DataObject) -> None:
    try:
        key = email_key(f"{local}@{domain}")[1]
    except InvalidAddress:
        assume(False)
        return
    address = data.draw(variants(key))
    assume(address.isascii() and len(address) <= MAX_PATH and address.lower() == key)
    assert email_key(address)[1] == key


def test_the_length_guard_is_needed() -> None:
    """An IDN's A-labels can be longer than its UTF-8 ("ü": 2 octets, "xn--tda": 7): a key can
    be longer than the address it came from, and than any address may be. So the shortcut
    checks MAX_PATH: such a key, given as an address, is refused."""
    address = "a" * 64 + "@" + ".".join(["ü"] * 30)
    key = email_key(address)[1]
    assert len(address.encode()) <= MAX_PATH < len(key) and key.isascii()
    with pytest.raises(InvalidAddress):
        email_key(key)
