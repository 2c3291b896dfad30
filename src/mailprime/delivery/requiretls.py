"""REQUIRETLS and "TLS-Required: No" (RFC 8689) on delivery: what a message's TLS flags do to
its routes, and when a REQUIRETLS message must be returned instead of retried.

Theory of operation. TLS on SMTP is opportunistic by default: delivery wins over secrecy. RFC
8689 lets the sender turn that around per message, either way:

* REQUIRETLS (the MAIL parameter, stored as `QueuedMessage.require_tls`). Every route of the job
  demands TLS whose certificate chains to a trusted root and matches the MX host name
  (`REQUIRETLS_TLS`, RFC 8689 4.2.1 step 4), enforced even where the domain's MTA-STS policy is
  only "testing" — the stricter requirement wins, and an `StsTls` keeps its type so that the TLS
  report still counts the session. The pooled-connection check (`smtp_transport._tls_covers`)
  then reuses only connections opened verified and enforced. After TLS, the next hop must offer
  REQUIRETLS again (step 5); the SMTP client refuses locally with 550 5.7.30 when it does not.
  A hop that fails either way is left for the next MX (4.2.1: "repeat steps 2-5 with each
  host"); when every route reached failed so, the recipients fail permanently (4.2.1: "MUST
  send a non-delivery notification") with 5.7.30 "REQUIRETLS support required" if some hop
  lacked REQUIRETLS, else 5.7.10 "Encryption needed" (the two codes 4.2.1 names). A route that
  could not be reached at all (connection refused, timeout) proves nothing about TLS, so a job
  with any such route stays transient and is retried. The same holds inside the TLS
  negotiation (`denies_tls`): only STARTTLS missing or refused, or a certificate that did not
  verify, shows that a host cannot carry the message; a handshake that timed out or broke on
  an I/O error is a network fault, and returning the message for it would turn one slow
  moment into a lost message.
  What is not done: RFC 8689 4.2.1 step 2 also wants the MX host name itself authenticated, by
  DNSSEC or by an MTA-STS policy that lists it. We have no DNSSEC validation; where the domain
  publishes an MTA-STS policy in "enforce" mode, its MX list already filters the routes
  (delivery.mta_sts), but without one the MX name from DNS is taken as is and only the
  certificate is checked against it.
* "TLS-Required: No" without REQUIRETLS (`QueuedMessage.tls_optional`, RFC 8689 4.2.2): the
  sender values delivery over secrecy, so the routes lose the TLS that the recipient's MTA-STS
  policy demanded and the dialer's own (opportunistic) policy applies.

The DSN of a REQUIRETLS message goes back from the null reverse-path without REQUIRETLS and
with the original's headers only (RFC 8689 5: "MUST behave as if RET=HDRS was present"; an
empty return path "SHOULD NOT cause a bounce message to be discarded"): the inbound service
stores RET=HDRS for such a message, and DSNs are queued without the flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mailprime.delivery.router import Route
from mailprime.delivery.tls_reports import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    STARTTLS_NOT_SUPPORTED,
    TlsFailure,
)
from mailprime.delivery.transport import TlsRequirement, TransactionReplies
from mailprime.domain.mail import QueuedMessage
from mailprime.proto.smtp.types import Reply

# RFC 8689 4.2.1 step 4: verified against the MX host name, and no fallback on failure.
REQUIRETLS_TLS = TlsRequirement(verify=True, source="requiretls", enforce=True)
NOT_SUPPORTED = "5.7.30"  # RFC 8689 7 (IANA): "REQUIRETLS support required"
ENCRYPTION_NEEDED = "5.7.10"  # RFC 5248 registry, named by RFC 8689 4.2.1 for a failed TLS
# RFC 8460 4.3.2.1 result types that are facts about the host's TLS, not about the network.
_HOST_LACKS_TLS = frozenset({STARTTLS_NOT_SUPPORTED, CERTIFICATE_HOST_MISMATCH,
                             CERTIFICATE_EXPIRED, CERTIFICATE_NOT_TRUSTED})
# The reason the SMTP client (net.smtp_client) gives every certificate verification failure,
# including those whose OpenSSL code has no RFC 8460 type of its own ("validation-failure").
_CERT_UNVERIFIED = "certificate verify failed"


def _stricter(tls: TlsRequirement | None) -> TlsRequirement:
    if tls is None:
        return REQUIRETLS_TLS
    # replace() keeps a subclass (delivery.mta_sts.StsTls), so its session is still reported.
    return replace(tls, verify=True, enforce=True, source="requiretls")


def routes_for(message: QueuedMessage, routes: Sequence[Route]) -> tuple[Route, ...]:
    """The routes as this message may use them (see the module doc)."""
    if message.require_tls:
        return tuple(replace(r, tls=_stricter(r.tls)) for r in routes)
    if message.tls_optional:
        return tuple(replace(r, tls=None) for r in routes)
    return tuple(routes)


def denies_tls(failure: TlsFailure) -> bool:
    """Whether a TLS failure shows the host cannot give verified TLS (see the module doc):
    STARTTLS not offered or refused, or a certificate that did not verify. A handshake timeout
    or an I/O error ("validation-failure" without a certificate verdict) does not."""
    return failure.result_type in _HOST_LACKS_TLS or _CERT_UNVERIFIED in failure.reason


def refuses_requiretls(replies: TransactionReplies) -> bool:
    """The MAIL FROM ... REQUIRETLS was refused for want of REQUIRETLS: our client's local
    refusal (no TLS, or not offered) or the server's own 5.7.30."""
    return not replies.mail.is_positive and replies.mail.enhanced == NOT_SUPPORTED


@dataclass(slots=True)
class RequireTlsTally:
    """Why each route of a REQUIRETLS job failed, to decide between retry and return."""

    domain: str
    tried: int = 0
    tls_failed: list[str] = field(default_factory=list)  # TLS missing or not verified
    unsupported: list[str] = field(default_factory=list)  # TLS fine, REQUIRETLS not offered

    def attempt(self) -> None:
        self.tried += 1

    def no_tls(self, where: str, reason: str) -> None:
        self.tls_failed.append(f"{where}: {reason}")

    def not_offered(self, where: str) -> None:
        self.unsupported.append(where)

    def final(self) -> Reply | None:
        """The permanent failure when every route tried failed the requirement; None when some
        route failed otherwise (unreachable, a 4xx) and a later attempt may find a path."""
        if self.tried == 0 or len(self.tls_failed) + len(self.unsupported) < self.tried:
            return None
        if self.unsupported:
            return Reply(550, f"REQUIRETLS support required: no mail host of {self.domain} "
                              f"offers REQUIRETLS over verified TLS ({', '.join(self.unsupported)})"
                              " (RFC 8689 4.2.1)", NOT_SUPPORTED)
        return Reply(550, f"Encryption needed: no verified TLS session with a mail host of "
                          f"{self.domain} ({self.tls_failed[-1]}) (RFC 8689 4.2.1)",
                     ENCRYPTION_NEEDED)


__all__ = [
    "ENCRYPTION_NEEDED",
    "NOT_SUPPORTED",
    "REQUIRETLS_TLS",
    "RequireTlsTally",
    "denies_tls",
    "refuses_requiretls",
    "routes_for",
]
