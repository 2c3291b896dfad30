"""Whatever arrives at the bounce address, parse_bounce and parse_arf return and never raise:
arbitrary bytes, real samples cut and spliced, and report-shaped text with hostile values."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.arf import parse_arf
from mailprime.message.bounce_parse import FailedRecipient, parse_bounce
from mailprime.message.bounce_reason import BounceReason, classify_reply, parse_enhanced

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAMPLES = sorted((Path(__file__).parent / "bounces").glob("*.eml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES]


def check(message: bytes) -> None:
    for r in parse_bounce(message):
        assert isinstance(r, FailedRecipient)
        assert "@" in r.recipient
        assert r.action in ("failed", "delayed")
        assert parse_enhanced(r.status) == r.status
        assert r.status[0] in "45"
        assert not (r.hard and r.status[0] == "4")
        assert "\n" not in r.diagnostic
    report = parse_arf(message)
    if report is not None:
        assert all("@" in a for a in report.recipients)


@FUZZ
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.sampled_from(SAMPLE_BYTES), st.data())
def test_samples_cut_and_spliced(sample: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(sample)))
    end = data.draw(st.integers(start, len(sample)))
    junk = data.draw(st.binary(max_size=200))
    check(sample[:start] + junk + sample[end:])
    check(sample[:end])


FIELD_NAMES = ["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
               "Remote-MTA", "Feedback-Type", "Original-Rcpt-To", "Reported-Domain", "X-Junk"]
VALUES = st.one_of(
    st.sampled_from(["rfc822; a@example.net", "utf-8; \\x{110000}@x", "utf-8; \\x{D800}@x", "failed",
                     "delayed", "5.1.1", "4.0.0", "9.9.9", "smtp; 550 5.1.1 no", "smtp;", ";", "",
                     "rfc822; <>", "rfc822; a@b@c", "abuse", "dns; mx.example.net. (192.0.2.1)"]),
    st.text(max_size=80),
)


@FUZZ
@given(st.lists(st.one_of(st.tuples(st.sampled_from(FIELD_NAMES), VALUES), st.just(None)), max_size=30),
       st.sampled_from(["delivery-status", "global-delivery-status", "feedback-report"]),
       st.sampled_from(["7bit", "base64", "quoted-printable"]))
def test_report_shaped_messages(fields: list[tuple[str, str] | None], kind: str, encoding: str) -> None:
    body = "\n".join("" if f is None else f"{f[0]}: {f[1]}" for f in fields)
    message = (
        "Content-Type: multipart/report; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
        "This message was created automatically by mail delivery software.\n\n  a@example.net\n"
        f"    host mx [192.0.2.1]: 550 nope\n--B\nContent-Type: message/{kind}\n"
        f"Content-Transfer-Encoding: {encoding}\n\n{body}\n--B--\n"
    ).encode("utf-8", "surrogatepass")
    check(message)


@FUZZ
@given(st.one_of(st.none(), st.integers(-1000, 1000)), st.one_of(st.none(), st.text(max_size=20)),
       st.text(max_size=300))
def test_classify_reply_total(code: int | None, enhanced: str | None, text: str) -> None:
    verdict = classify_reply(code, enhanced, text)
    assert verdict.reason in BounceReason
    assert parse_enhanced(verdict.status) == verdict.status
