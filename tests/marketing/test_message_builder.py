"""marketing.message_builder, byte-level: every header, the multipart structure, the decoded
parts equal to what was rendered, RFC 8058 exactly, non-ASCII, header injection refused, and
(hypothesis) no merge data ever breaks the MIME structure or adds a header."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import html as html_lib
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.domain.audience import list_of_label
from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.message_builder import (
    BuiltMessage,
    CampaignInfo,
    HeaderError,
    MessageBuilder,
    ascii_html,
    crlf,
    encode_part,
)
from mailprime.marketing.templates import Recipient, RenderError, compile_template
from mailprime.message.dkim import (
    DkimAlgorithm,
    SigningKey,
    generate_private_key,
    load_private_key,
    public_key_record,
    sign_message,
)
from tests.support.dkim_verifiers import dkimpy_verify

SECRET = b"a test secret of 32 octets......"
WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HTML = ("<html><head><style>p { color: red }</style></head><body><p>Hello {{ name }}, "
        "{{ attributes.greeting | default('hi') }}</p>"
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a><p>{{ postal_address }}</p></body></html>')


class HmacLinks:
    """The UnsubscribeLinks the test signs itself (marketing.tokens owns the real signing)."""

    def _tag(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        msg = f"{campaign.campaign_id}:{recipient.email.lower()}".encode()
        return hmac.new(SECRET, msg, hashlib.sha256).hexdigest()[:32]

    def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return f"https://mail.a.test/u/{campaign.campaign_id}/{self._tag(recipient, campaign)}"

    def mailto_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return f"mailto:unsubscribe@a.test?subject=u-{self._tag(recipient, campaign)}"


CAMPAIGN = CampaignInfo(CampaignId(42), "Spring sale", "news@a.test", "A News", "Weekly News",
                        "weekly", "1 Main St, Springfield", ListId(3))


def builder(subject: str = "Hi {{ name }}", html: str = HTML, text: str | None = None,
            campaign: CampaignInfo = CAMPAIGN) -> MessageBuilder:
    return MessageBuilder(compile_template(subject, html, text), campaign, HmacLinks(),
                          now=lambda: WHEN)


def parse(built: BuiltMessage) -> EmailMessage:
    msg = email.message_from_bytes(built.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and line[0] not in " \t"]


def test_every_header_and_the_structure() -> None:
    b = builder()
    built = b.build(Recipient("bob@b.test", "Bob", contact_id=ContactId(7)),
                    message_id="<fixed@a.test>")
    assert header_names(built.data) == [
        "From", "To", "Subject", "Date", "Message-ID", "List-Id", "MIME-Version",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID", "Content-Type"]
    msg = parse(built)
    tag = HmacLinks()._tag(Recipient("bob@b.test"), CAMPAIGN)
    assert msg["From"] == "A News <news@a.test>"
    assert msg["To"] == "Bob <bob@b.test>"
    assert msg["Subject"] == "Hi Bob"
    assert msg["Date"] == "Wed, 02 Jan 2030 03:04:05 +0000"
    assert msg["Message-ID"] == "<fixed@a.test>" == built.message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "Weekly News <weekly.a.test>"
    assert msg["List-Unsubscribe"] == (f"<https://mail.a.test/u/42/{tag}>, "
                                       f"<mailto:unsubscribe@a.test?subject=u-{tag}>")
    assert msg["Feedback-ID"] == "42:a.test:marketing:mailprime"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = list(msg.iter_parts())
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    rendered = built.rendered
    assert text.get_content() == crlf(rendered.text)
    assert html.get_content() == crlf(rendered.html)
    assert f"https://mail.a.test/u/42/{tag}" in rendered.html
    assert '<p style="color: red;">Hello Bob, hi</p>' in rendered.html
    assert not built.smtputf8 and built.data.isascii()
    head, body = built.data.split(b"\r\n\r\n", 1)
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert all(len(line) <= 998 for line in body.split(b"\r\n"))
    assert built.data.endswith(b"--\r\n") and b"\n" not in built.data.replace(b"\r\n", b"")


def test_rfc8058_headers_exactly() -> None:
    data = builder().build(Recipient("bob@b.test")).data.replace(b"\r\n ", b" ")  # unfolded
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data
    found = re.search(rb"\r\nList-Unsubscribe: (<https://[^>]+>), (<mailto:[^>]+>)\r\n", data)
    assert found, data[:600]
    assert data.count(b"List-Unsubscribe:") == 1 and data.count(b"List-Unsubscribe-Post:") == 1


def test_message_ids_are_fresh_and_at_the_sending_domain() -> None:
    b = builder()
    ids = {b.build(Recipient(f"r{i}@b.test")).message_id for i in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"<[0-9a-f]{32}@a\.test>", i) for i in ids)


def test_non_ascii_subject_names_and_list() -> None:
    campaign = CampaignInfo(CampaignId(1), "Frühling", "news@a.test", "Änne Müller", "Новости",
                            "новости", "Hauptstraße 1, Köln")
    built = builder("Grüße, {{ name }} — 春", campaign=campaign).build(
        Recipient("bob@b.test", "Jürgen \"J\" Groß"))
    assert built.data.split(b"\r\n\r\n", 1)[0].isascii()  # RFC 2047 encoded-words
    msg = parse(built)
    assert msg["Subject"] == 'Grüße, Jürgen "J" Groß — 春'
    assert msg["From"].addresses[0].display_name == "Änne Müller"
    assert msg["To"].addresses[0].display_name == 'Jürgen "J" Groß'
    assert msg["List-Id"].endswith("<list.a.test>")  # a non-ASCII label becomes "list"
    assert "Новости" in str(msg["List-Id"])
    text, html = list(msg.iter_parts())
    assert "Jürgen" in text.get_content()
    assert "Hauptstra&#223;e" in html.get_content()  # a character reference: the part is 7bit
    assert html["Content-Transfer-Encoding"] == "7bit"
    assert html_lib.unescape(html.get_content()) == html_lib.unescape(crlf(built.rendered.html))


def test_a_long_non_ascii_name_is_several_encoded_words_of_at_most_75() -> None:
    name = "Jürgen-Änne Groß-Müller von Überlingen " * 3 + "日本語の名前" * 6
    built = builder().build(Recipient("bob@b.test", name))
    head = built.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    to = re.search(r"^To:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head, re.MULTILINE)
    assert to is not None
    words = re.findall(r"=\?utf-8\?[bq]\?[^?]*\?=", to.group(), re.IGNORECASE)
    assert len(words) > 1 and all(len(w) <= 75 for w in words)  # RFC 2047 2
    assert all(len(line) <= 78 for line in to.group().split("\r\n"))  # folded (RFC 5322 2.1.1)
    value = to.group()[len("To: "):].replace("\r\n", "")
    assert str(make_header(decode_header(value.rsplit(" <", 1)[0]))) == name.strip()
    assert value.endswith("<bob@b.test>")


def test_non_ascii_in_style_keeps_the_html_as_it_is() -> None:
    page = "<style>p::before { content: '→' }</style><p>é</p>"
    assert ascii_html(page) == page
    assert ascii_html("<p>é · x</p>") == "<p>&#233; &#183; x</p>"


def test_a_non_ascii_address_needs_smtputf8() -> None:
    built = builder().build(Recipient("jürgen@b.test", "J"))
    assert built.smtputf8
    assert '"J" <jürgen@b.test>'.encode() in built.data


@pytest.mark.parametrize("recipient", [
    Recipient("bob@b.test", "Bob\r\nBcc: victim@c.test"),
    Recipient("bob@b.test", "Bob\nX: y"),
    Recipient("bob@b.test\r\nBcc: victim@c.test", "Bob"),
    Recipient("bob@b.test", "Bob\x00"),
    Recipient("bob@b.test", "ok", {"greeting": "x"}),  # subject below injects through merge data
])
def test_header_injection_is_refused(recipient: Recipient) -> None:
    b = builder("Hi {{ name }}{{ attributes.s | default('') }}")
    if recipient.name == "ok":
        recipient = Recipient("bob@b.test", "ok", {"s": "\r\nBcc: victim@c.test"})
    with pytest.raises(HeaderError):
        b.build(recipient)


def test_a_bad_campaign_or_link_is_refused() -> None:
    with pytest.raises(HeaderError):
        builder(campaign=CampaignInfo(CampaignId(1), "c", "news@a.test", "A\r\nB", "l", "l", "p"))

    class BadLinks(HmacLinks):
        def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
            return "http://not-https.a.test/u"

    b = MessageBuilder(compile_template("s", HTML), CAMPAIGN, BadLinks(), now=lambda: WHEN)
    with pytest.raises(HeaderError):
        b.build(Recipient("bob@b.test"))


def test_a_render_error_is_the_recipients_alone() -> None:
    b = builder("Hi {{ attributes.first }}")
    with pytest.raises(RenderError):
        b.build(Recipient("bob@b.test"))
    assert parse(b.build(Recipient("ann@b.test", "", {"first": "Ann"})))["Subject"] == "Hi Ann"


@pytest.mark.parametrize(("text", "encoding"), [
    ("plain ASCII\nlines\n", "7bit"),
    ("x" * 2000, "quoted-printable"),  # ASCII but a line over 998 octets
    ("Greetings from Köln, the weather is fine and the trains are late. " * 20,
     "quoted-printable"),
    ("Grüße aus Köln, schöne Tage " * 20, "base64"),  # one octet in ten is 8-bit: base64 wins
    ("Привет, как дела? " * 50, "base64"),
    ("春夏秋冬" * 100, "base64"),
])
def test_parts_take_the_smaller_encoding_within_line_limits(text: str, encoding: str) -> None:
    body, cte = encode_part(text)
    assert cte == encoding
    limit = 998 if cte == "7bit" else 76
    assert all(len(line) <= limit for line in body.split(b"\r\n"))
    msg = EmailMessage(policy=email.policy.default)
    raw = (f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
           .encode() + body)
    msg = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
    assert msg.get_content() == crlf(text)


def test_the_message_is_dkim_signable_and_the_list_headers_are_covered() -> None:
    key = SigningKey("a.test", "s1", load_private_key(generate_private_key(DkimAlgorithm.RSA_SHA256)))
    data = builder().build(Recipient("bob@b.test", "Bob")).data
    # now, not WHEN: dkimpy fails a signature whose t= is in the future
    signed = sign_message(data, [key], int(datetime.now(UTC).timestamp())) + data
    assert b"list-unsubscribe:list-unsubscribe-post:feedback-id" in signed.replace(b"\r\n\t", b"")
    records = {"s1._domainkey.a.test": public_key_record(key.key)}
    assert [v.result for v in dkimpy_verify(signed, records)] == ["pass"]


TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXTS, attrs=st.dictionaries(st.sampled_from(["s", "greeting", "x"]), TEXTS,
                                         max_size=3))
def test_merge_data_never_breaks_the_structure_or_injects(name: str, attrs: dict[str, str]) -> None:
    b = builder("Hi {{ name }} {{ attributes.s | default('') }}",
                "<p>{{ name }} {{ attributes.greeting | default('') }}</p>"
                '<a href="{{ unsubscribe_url }}">u</a>{{ postal_address }}',
                "{{ name }}\n{{ attributes.x | default('') }}\n{{ unsubscribe_url }}")
    try:
        built = b.build(Recipient("bob@b.test", name, attrs))
    except HeaderError:
        header_text = name + attrs.get("s", "")
        assert any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in header_text)
        return
    assert header_names(built.data) == [
        "From", "To", "Subject", "Date", "Message-ID", "List-Id", "MIME-Version",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID", "Content-Type"]
    msg = parse(built)
    assert not msg.defects
    assert msg["To"].addresses[0].addr_spec == "bob@b.test"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == crlf(built.rendered.text)
    assert parts[1].get_content() == crlf(ascii_html(built.rendered.html))
    assert all(len(line) <= 998 for line in built.data.split(b"\r\n"))


@pytest.mark.parametrize("name_length", [10, 200, 240, 300, 1000])
def test_a_long_list_name_shortens_the_label_not_the_id_or_the_domain(name_length: int) -> None:
    """RFC 2919 2: the list-id is at most 255 octets. The label's name part is what gives way:
    the "-<list id>" suffix (how a reply maps back to the list) and the domain stay whole."""
    domain = "newsletters.example-company.test"
    label = f"{'n' * name_length}-{1234567}"
    info = CampaignInfo(CampaignId(42), "Spring sale", f"news@{domain}", "A News",
                        "Weekly News", label, "1 Main St, Springfield", ListId(1234567))
    msg = parse(builder(campaign=info).build(Recipient("bob@b.test", "Bob")))
    list_id = str(msg["List-Id"]).rpartition("<")[2].rstrip(">")
    assert len(list_id) <= 255
    assert list_id.endswith(f"-1234567.{domain}")
    assert list_id.startswith("n" * min(name_length, 10))
    assert list_of_label(list_id[:-len(domain) - 1]) == ListId(1234567)
