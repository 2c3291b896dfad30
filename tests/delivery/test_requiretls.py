"""REQUIRETLS and "TLS-Required: No" on routes (RFC 8689 4.2.1, 4.2.2), and the choice between
retry and return when no route met the requirement: pure, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from mailprime.delivery.mta_sts import StsTls
from mailprime.delivery.requiretls import (
    REQUIRETLS_TLS,
    RequireTlsTally,
    refuses_requiretls,
    routes_for,
)
from mailprime.delivery.router import Route
from mailprime.delivery.smtp_transport import _tls_covers
from mailprime.delivery.transport import TlsRequirement, TransactionReplies
from mailprime.domain.ids import BlobId, QueueId
from mailprime.domain.mail import Priority, QueuedMessage
from mailprime.proto.smtp.types import Reply

NOW = datetime(2030, 1, 1, tzinfo=UTC)
TESTING = StsTls(verify=True, enforce=False, policy_domain="b.test")
NO_POLICY = StsTls(verify=False, enforce=False, policy_domain="b.test",
                   policy_type="no-policy-found")
ENFORCE = StsTls(verify=True, enforce=True, policy_domain="b.test")
ROUTES = (Route("mx1.b.test", "192.0.2.1", 10, tls=TESTING),
          Route("mx2.b.test", "192.0.2.2", 20, tls=NO_POLICY),
          Route("mx3.b.test", "192.0.2.3", 30),
          Route("mx4.b.test", "192.0.2.4", 40, tls=ENFORCE))


def message(**flags: bool) -> QueuedMessage:
    return QueuedMessage(QueueId("q"), "a@a.test", BlobId(1), 10, Priority.NORMAL, NOW, NOW,
                         **flags)


def test_requiretls_makes_every_route_verified_and_enforced() -> None:
    routes = routes_for(message(require_tls=True), ROUTES)
    assert [r.mx_host for r in routes] == [r.mx_host for r in ROUTES]
    assert all(r.tls is not None and r.tls.verify and r.tls.enforce for r in routes)
    assert routes[2].tls == REQUIRETLS_TLS
    # MTA-STS requirements keep their type (and policy domain): TLS reports still count them.
    assert routes[0].tls == StsTls(verify=True, enforce=True, source="requiretls",
                                   policy_domain="b.test")
    assert isinstance(routes[1].tls, StsTls) and routes[1].tls.policy_type == "no-policy-found"
    # Only a verified, enforced pooled connection may carry such a job.
    for have, ok in ((None, False), (TESTING, False), (NO_POLICY, False), (ENFORCE, True),
                     (REQUIRETLS_TLS, True)):
        assert _tls_covers(have, routes[2].tls) is ok, have


def test_requiretls_wins_over_tls_required_no() -> None:
    both = routes_for(message(require_tls=True, tls_optional=True), ROUTES)
    assert all(r.tls is not None and r.tls.enforce for r in both)


def test_tls_required_no_drops_the_policy() -> None:
    assert [r.tls for r in routes_for(message(tls_optional=True), ROUTES)] == [None] * 4
    assert routes_for(message(), ROUTES) == ROUTES


def test_refusal_is_recognised_by_its_enhanced_code() -> None:
    local = Reply(550, "REQUIRETLS support required", "5.7.30")
    assert refuses_requiretls(TransactionReplies(local, (local,), None))
    other = Reply(550, "no", "5.7.1")
    assert not refuses_requiretls(TransactionReplies(other, (other,), None))


def test_returned_only_when_every_route_failed_the_requirement() -> None:
    tally = RequireTlsTally("b.test")
    assert tally.final() is None  # nothing tried (e.g. all routes deferred by shaping)
    tally.attempt()
    tally.no_tls("mx1[192.0.2.1]:25", "certificate verify failed")
    tally.attempt()  # mx2 unreachable: it may yet meet the requirement
    assert tally.final() is None
    tally.attempt()
    tally.not_offered("mx3[192.0.2.3]:25")
    assert tally.final() is None

    tls_only = RequireTlsTally("b.test")
    tls_only.attempt()
    tls_only.no_tls("mx1[192.0.2.1]:25", "STARTTLS not offered")
    assert tls_only.final() == Reply(
        550, "Encryption needed: no verified TLS session with a mail host of b.test "
             "(mx1[192.0.2.1]:25: STARTTLS not offered) (RFC 8689 4.2.1)", "5.7.10")

    mixed = RequireTlsTally("b.test")
    mixed.attempt()
    mixed.no_tls("mx1[192.0.2.1]:25", "certificate verify failed")
    mixed.attempt()
    mixed.not_offered("mx2[192.0.2.2]:25")
    final = mixed.final()
    assert final is not None and final.enhanced == "5.7.30"
    assert final.text == ("REQUIRETLS support required: no mail host of b.test offers REQUIRETLS "
                          "over verified TLS (mx2[192.0.2.2]:25) (RFC 8689 4.2.1)")


def test_plain_requirement_is_upgraded_not_replaced() -> None:
    loose = TlsRequirement(verify=False, source="mta-sts", enforce=False)
    (route,) = routes_for(message(require_tls=True), (Route("mx", "192.0.2.9", 0, tls=loose),))
    assert route.tls == REQUIRETLS_TLS
