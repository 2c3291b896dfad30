"""MTA-STS pure parts (RFC 8461): the _mta-sts TXT record, the policy file, MX patterns, and the
TLS report body (RFC 8460 4.4). No sockets."""

from __future__ import annotations

from datetime import date

import pytest

from mailprime.delivery.mta_sts import (
    MAX_AGE_LIMIT,
    MAX_POLICY_SIZE,
    PolicyError,
    StsMode,
    StsPolicy,
    mx_pattern_matches,
    parse_policy,
    parse_txt_records,
)
from mailprime.delivery.tls_reports import TlsFailure, report_json
from mailprime.domain.deliverability import TlsResultKey

# TXT record (RFC 8461 3.1) -------------------------------------------------------------------


@pytest.mark.parametrize(("records", "expected"), [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),  # the RFC's example
    (["v=STSv1;id=abc"], "abc"),
    (["v=STSv1; id=abc; ext_1.x=val"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=abc"], "abc"),  # other TXT records are discarded
    (["v=STSv1; id=" + "a" * 32], "a" * 32),
])
def test_txt_record_gives_the_policy_id(records: list[str], expected: str) -> None:
    assert parse_txt_records(records) == expected


@pytest.mark.parametrize(("records", "why"), [
    ([], "0 TXT records"),
    (["v=STSv1; id=a", "v=STSv1; id=b"], "2 TXT records"),  # 3.1: not exactly one
    (["V=STSv1; id=a"], "0 TXT records"),  # %s"v=STSv1" is case-sensitive
    (["v=STSv1 id=a"], "0 TXT records"),
    (["v=STSv1; id="], "invalid id"),
    (["v=STSv1; id=" + "a" * 33], "invalid id"),
    (["v=STSv1; id=a-b"], "invalid id"),
    (["v=STSv1; foo"], "without '='"),
    (["v=STSv1; x=y"], "no id"),
    (["v=STSv1; id=a; bad;name=v"], "without '='"),
])
def test_invalid_txt_record_means_no_policy(records: list[str], why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_txt_records(records)


# Policy file (RFC 8461 3.2) ------------------------------------------------------------------

RFC_EXAMPLE = ("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
               "mx: backupmx.example.com\nmax_age: 604800\n")


def test_rfc_example_policy() -> None:
    assert parse_policy(RFC_EXAMPLE) == StsPolicy(
        StsMode.ENFORCE, ("mail.example.com", "*.example.net", "backupmx.example.com"), 604800)


def test_crlf_whitespace_case_and_unknown_keys() -> None:
    text = ("Version:STSv1\r\n  mode :\ttesting  \r\nMX: MX1.Example.COM.\r\n"
            "future_key: anything at all\r\nmax_age:86400\r\nmx: mx1.example.com\r\n\r\n")
    assert parse_policy(text) == StsPolicy(StsMode.TESTING, ("mx1.example.com",), 86400)


def test_mode_none_needs_no_mx_and_first_value_of_a_repeated_key_wins() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmode: enforce\nmax_age: 0\n") == \
        StsPolicy(StsMode.NONE, (), 0)


def test_max_age_above_the_limit_is_capped() -> None:
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n")
    assert policy.max_age == MAX_AGE_LIMIT == 31557600


@pytest.mark.parametrize(("text", "why"), [
    ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version must be STSv1"),
    ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version must be STSv1"),
    ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode must be"),
    ("version: STSv1\nmx: a.example\nmax_age: 1\n", "mode must be"),
    ("version: STSv1\nmode: enforce\nmx: a.example\n", "max_age must be"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "max_age must be"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", "max_age must be"),
    ("version: STSv1\nmode: enforce\nmax_age: 1\n", "needs at least one mx"),
    ("version: STSv1\nmode: testing\nmx: a..example\nmax_age: 1\n", "invalid mx pattern"),
    ("version: STSv1\nmode: testing\nmx: *.*.example\nmax_age: 1\n", "invalid mx pattern"),
    ("version: STSv1\nmode: testing\nmx: a*.example\nmax_age: 1\n", "invalid mx pattern"),
    ("version: STSv1\nmode: testing\nmx: -a.example\nmax_age: 1\n", "invalid mx pattern"),
    ("version: STSv1\nmode enforce\n", "without 'key: value'"),
    ("<html><body>Not found</body></html>", "without 'key: value'"),
])
def test_invalid_policies(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_policy(text)


def test_policy_size_limit() -> None:
    body = "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n"
    padding = "x-pad: " + "p" * (MAX_POLICY_SIZE - len(body) - 8) + "\n"
    assert len(body + padding) == MAX_POLICY_SIZE
    assert parse_policy(body + padding).mode is StsMode.ENFORCE
    with pytest.raises(PolicyError, match="larger than 65536"):
        parse_policy(body + padding + "y")


# MX patterns (RFC 8461 4.1) ----------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.Example.com.", True),
    ("mail.example.com", "mail2.example.com", False),
    ("mail.example.com", "x.mail.example.com", False),
    ("*.example.net", "mx1.example.net", True),
    ("*.example.net", "MX1.EXAMPLE.NET", True),
    ("*.example.net", "example.net", False),  # the wildcard needs a label
    ("*.example.net", "a.b.example.net", False),  # exactly one label (4.1)
    ("*.example.net", ".example.net", False),
    ("*.example.net", "mx1.example.net.evil", False),
])
def test_mx_patterns(pattern: str, host: str, matches: bool) -> None:
    assert mx_pattern_matches(pattern, host) is matches


def test_policy_matches_any_of_its_patterns() -> None:
    policy = parse_policy(RFC_EXAMPLE)
    assert policy.matches("mail.example.com") and policy.matches("mx9.example.net")
    assert not policy.matches("example.net") and not policy.matches("mail.example.org")


# Report body (RFC 8460 4.4) ----------------------------------------------------------------

def test_report_json_summarises_per_policy_type() -> None:
    rows = [
        (TlsResultKey("example.com", "sts", ""), 40),
        (TlsResultKey("example.com", "sts", "certificate-host-mismatch", "mx2.example.com"), 3),
        (TlsResultKey("example.com", "sts", "sts-policy-fetch-error"), 1),
        (TlsResultKey("other.test", "no-policy-found", ""), 9),
    ]
    report = report_json(rows, day=date(2026, 11, 20), policy_domain="Example.com",
                         organization="Sender Inc", contact="postmaster@sender.test",
                         report_id="r1", policy_strings=["version: STSv1", "mode: enforce"])
    assert report == {
        "organization-name": "Sender Inc",
        "date-range": {"start-datetime": "2026-11-20T00:00:00Z",
                       "end-datetime": "2026-11-20T23:59:59Z"},
        "contact-info": "postmaster@sender.test",
        "report-id": "r1",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": "example.com",
                       "policy-string": ["version: STSv1", "mode: enforce"]},
            "summary": {"total-successful-session-count": 40,
                        "total-failure-session-count": 4},
            "failure-details": [
                {"result-type": "certificate-host-mismatch",
                 "receiving-mx-hostname": "mx2.example.com", "failed-session-count": 3},
                {"result-type": "sts-policy-fetch-error", "failed-session-count": 1},
            ],
        }],
    }


def test_tls_failure_is_transient_and_typed() -> None:
    exc = TlsFailure("mx[1.2.3.4]:25: TLS required but STARTTLS not offered",
                     "starttls-not-supported")
    assert (exc.transient, exc.enhanced, exc.result_type) == (True, "4.7.5",
                                                              "starttls-not-supported")
    assert TlsFailure("x", "made-up").result_type == "validation-failure"


def test_a_testing_mode_connection_never_serves_an_enforced_route() -> None:
    """A connection opened under an MTA-STS "testing" policy may have fallen back to unverified
    TLS; reusing it for a domain whose policy enforces would skip the verification."""
    from mailprime.delivery.mta_sts import StsTls
    from mailprime.delivery.smtp_transport import _tls_covers

    enforced = StsTls(verify=True, policy_domain="a.test", enforce=True)
    testing = StsTls(verify=True, policy_domain="b.test", enforce=False)
    assert _tls_covers(enforced, enforced)
    assert not _tls_covers(testing, enforced)
    assert _tls_covers(testing, None)
    assert not _tls_covers(None, enforced)
