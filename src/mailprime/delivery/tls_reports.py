"""TLS reporting data (RFC 8460): what happened to each outbound TLS session, per policy domain
and day, and the report body built from it.

Theory of operation. Every delivery session to a domain ends in one result: a success (TLS
negotiated and, where a policy asked for it, verified) or a failure of one RFC 8460 4.3 type
(`starttls-not-supported`, `certificate-host-mismatch`, ...), and a policy that could not be
fetched counts as a failure too (`sts-policy-fetch-error`, `sts-policy-invalid`,
`sts-webpki-invalid`, 4.3.2.2). Writing a row per session would put one database write on the hot
path of every delivery, so `TlsReports` only adds to counters in memory; a background task moves
them to the store (MtaStsStore.add_tls_results, an upsert that adds) every `flush_interval`
seconds and once more at stop. Counts that fail to flush are put back and tried again, so a
database hiccup loses nothing; a crash loses at most one interval of counts, which a report (a
daily aggregate, RFC 8460 4.1) tolerates.

The day is the UTC day the session happened (RFC 8460 4.4: "date-range" is in UTC), taken from
the injected clock, so a flush after midnight still files the counts under the right day.
`report_json` turns one day's rows into the RFC 8460 4.4 JSON body for one policy domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mailprime.delivery.transport import DeliveryError
from mailprime.domain.clock import Clock
from mailprime.domain.deliverability import TlsResultKey
from mailprime.storage.ports import MtaStsStore

log = logging.getLogger("mailprime.delivery.tls")

# RFC 8460 4.3: result types. Session failures (4.3.2.1) and policy failures (4.3.2.2).
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"
RESULT_TYPES = frozenset({
    STARTTLS_NOT_SUPPORTED, CERTIFICATE_HOST_MISMATCH, CERTIFICATE_EXPIRED,
    CERTIFICATE_NOT_TRUSTED, VALIDATION_FAILURE, STS_POLICY_FETCH_ERROR, STS_POLICY_INVALID,
    STS_WEBPKI_INVALID, "tlsa-invalid", "dnssec-invalid", "dane-required",
})
SUCCESS = ""  # TlsResultKey.result_type of a successful session

POLICY_STS = "sts"
POLICY_NONE = "no-policy-found"

# Bound on distinct keys held between flushes: a flood of domains must not grow memory without
# limit (counts beyond it are dropped with a warning; the next flush makes room).
MAX_PENDING_KEYS = 50_000


class TlsFailure(DeliveryError):
    """A route failed its TLS requirement: STARTTLS missing or refused, or the certificate did not
    verify. `result_type` is the RFC 8460 4.3.2.1 type; it is always transient (RFC 8461 5.1 step
    3: never fail permanently before a newer policy could be seen)."""

    def __init__(self, reason: str, result_type: str, *, enhanced: str = "4.7.5") -> None:
        super().__init__(reason, transient=True, enhanced=enhanced)
        self.result_type = result_type if result_type in RESULT_TYPES else VALIDATION_FAILURE


class TlsReports:
    """Per-day counters of TLS results, flushed to the store in the background."""

    def __init__(self, store: MtaStsStore, clock: Clock, *, flush_interval: float = 5.0) -> None:
        self._store = store
        self._clock = clock
        self._interval = flush_interval
        self._pending: dict[date, Counter[TlsResultKey]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, policy_domain: str, policy_type: str, result_type: str = SUCCESS,
               receiving_mx: str = "") -> None:
        """Counts one session (or one policy failure) for today (UTC)."""
        day = self._clock.now().astimezone(UTC).date()
        key = TlsResultKey(policy_domain.lower(), policy_type, result_type, receiving_mx.lower())
        counts = self._pending.setdefault(day, Counter())
        if key not in counts and self.pending_keys() >= MAX_PENDING_KEYS:
            log.warning("tls report counters full (%d keys): dropping %s", MAX_PENDING_KEYS, key)
            return
        counts[key] += 1

    def pending_keys(self) -> int:
        return sum(len(c) for c in self._pending.values())

    def pending(self) -> Mapping[date, Mapping[TlsResultKey, int]]:
        """What the next flush would write (for tests and diagnostics)."""
        return {day: dict(c) for day, c in self._pending.items()}

    async def flush(self) -> None:
        """Moves the counters to the store; on failure they are kept for the next flush."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            for day, counts in sorted(batch.items()):
                try:
                    await self._store.add_tls_results(day, dict(counts))
                except Exception:
                    # Put back what was not written; merged with whatever arrived meanwhile.
                    log.exception("flushing tls report counts for %s failed; kept for retry", day)
                    for later in (d for d in batch if d >= day):
                        self._pending.setdefault(later, Counter()).update(batch[later])
                    return

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tls-reports")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a production timer, not synchronisation
            await self.flush()

    async def close(self) -> None:
        """Stops the background task and writes what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


# The RFC 8460 4.4 report body ---------------------------------------------------------------

def report_json(rows: Sequence[tuple[TlsResultKey, int]], *, day: date, policy_domain: str,
                organization: str, contact: str, report_id: str,
                policy_strings: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON report (RFC 8460 4.4) for `policy_domain` on `day`: one "policies" entry per
    policy type seen, with its summary and one "failure-details" entry per result type and
    receiving MX. `policy_strings` are the policy's lines (4.4 "policy-string")."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = start + timedelta(days=1, seconds=-1)  # RFC 8460 4.4 example: 00:00:00Z-23:59:59Z
    domain = policy_domain.lower()
    by_type: dict[str, list[tuple[TlsResultKey, int]]] = {}
    for key, count in rows:
        if key.policy_domain == domain:
            by_type.setdefault(key.policy_type, []).append((key, count))
    policies = []
    for policy_type, entries in sorted(by_type.items()):
        ok = sum(n for k, n in entries if k.result_type == SUCCESS)
        failed = sum(n for k, n in entries if k.result_type != SUCCESS)
        policy: dict[str, Any] = {"policy-type": policy_type, "policy-domain": domain}
        if policy_type == POLICY_STS and policy_strings:
            policy["policy-string"] = list(policy_strings)
        details = [
            {"result-type": k.result_type, "receiving-mx-hostname": k.receiving_mx,
             "failed-session-count": n} if k.receiving_mx else
            {"result-type": k.result_type, "failed-session-count": n}
            for k, n in sorted(entries, key=lambda e: (e[0].result_type, e[0].receiving_mx))
            if k.result_type != SUCCESS
        ]
        entry: dict[str, Any] = {
            "policy": policy,
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": failed},
        }
        if details:
            entry["failure-details"] = details
        policies.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _rfc3339(start), "end-datetime": _rfc3339(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "POLICY_NONE",
    "POLICY_STS",
    "RESULT_TYPES",
    "SUCCESS",
    "TlsFailure",
    "TlsReports",
    "report_json",
]
