"""The Postfix halves of the benchmark cases, each on a private instance (tests.support.postfix).

- accept: smtp-source -> Postfix smtpd (queue files fsynced before each 250) -> discard(8).
- relay:  smtp-source -> Postfix smtpd -> queue -> smtp(8) client -> smtp-sink.

The clock starts just before smtp-source starts (its first connect) and stops when the last
message is gone from the queue (accept) or counted by smtp-sink (relay); the time smtp-source
took is kept too, as `accepted_s`.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.postfix import PostfixInstance, free_port, smtp_sink

from bench.smtp_source import Load, Measurement, send

DRAIN_POLL = 0.05  # coarse: polling the queue directories steals CPU from the peer on 2 cores


def _drain_timeout(load: Load) -> float:
    # Generous bound (Postfix drains thousands per second here); the loop never runs unbounded.
    return 60.0 + load.messages / 20


def postfix_accept(workdir: Path, load: Load) -> Measurement:
    with PostfixInstance(workdir, smtpd_port=free_port(), mydomain="bench.test", mode="discard") as pf:
        start = time.perf_counter()
        accepted = send(*pf.address, load)
        pf.wait_queue_empty(_drain_timeout(load), interval=DRAIN_POLL)
        done = time.perf_counter() - start
    return Measurement(load.messages, accepted, done)


def postfix_relay(workdir: Path, load: Load) -> Measurement:
    sink_port = free_port()
    with smtp_sink(sink_port) as sink, PostfixInstance(
            workdir, smtpd_port=free_port(), mydomain="relay.test", mode="relay",
            relay_to=("127.0.0.1", sink_port)) as pf:
        start = time.perf_counter()
        accepted = send(*pf.address, load)
        sink.wait_for(load.messages, _drain_timeout(load))  # woken by the counter, no polling
        done = time.perf_counter() - start
    return Measurement(load.messages, accepted, done)
