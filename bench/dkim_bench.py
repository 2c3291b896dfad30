"""DKIM signing speed: mailprime's signer against `openssl speed`, on one core, same invocation.

Ours: the path a message takes when it is signed in memory (services.dkim_keys.DkimSigner.sign,
as injected and campaign mail is): split header and body, find the From domain, look its keys
up in the signer's cache, canonicalize and hash the 10 KB body (relaxed), canonicalize the
signed header fields, sign (RSA-2048 PKCS#1 v1.5, or Ed25519 over the SHA-256 digest), fold the
DKIM-Signature field, prepend it. One key per run, so each algorithm is measured alone.

Peer: `openssl speed -seconds N rsa2048` / `ed25519`: OpenSSL's raw signatures per second of a
small digest on one core (no canonicalization, no hashing of a body). Ratio = ours / OpenSSL:
the share of the raw signing rate left once a real message is signed around it.

Per core on both sides: `openssl speed` runs N seconds of wall time but divides its count by the
process's *user CPU time* (its default; `-elapsed` would divide by wall time), so a machine busy
with other work does not lower its figure. Ours is divided by this process's CPU time (user +
system, `time.process_time`) for the same reason; dividing ours by wall time instead, as this
bench once did, compared OpenSSL's CPU rate with our wall rate and charged us for every time
slice the scheduler gave to another process (0.35x under load 3.5). The wall-clock rate is kept
in `Rate.wall` for the record. Both sign with the same key sizes (RSA-2048, Ed25519), one
thread, one process.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailprime.domain.clock import SystemClock
from mailprime.domain.dkim import DkimKey, DkimKeyType
from mailprime.message.dkim import DkimAlgorithm, generate_private_key
from mailprime.services.dkim_keys import DkimSigner

MESSAGE_SIZE = 10 * 1024
SECONDS = 3.0
DOMAIN = "bench.example"


@dataclass(frozen=True, slots=True)
class DkimCase:
    key: str
    name: str
    key_type: DkimKeyType
    openssl_arg: str  # what `openssl speed` calls the algorithm

    @property
    def peer(self) -> str:
        return f"openssl speed {self.openssl_arg} (sign/s)"


DKIM_CASES: tuple[DkimCase, ...] = (
    DkimCase("dkim-rsa", "DKIM sign RSA-2048", DkimKeyType.RSA, "rsa2048"),
    DkimCase("dkim-ed25519", "DKIM sign Ed25519", DkimKeyType.ED25519, "ed25519"),
)


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    seconds: float  # CPU seconds spent (what `openssl speed` divides by; see the module doc)
    wall: float = 0.0  # wall-clock seconds, when known

    @property
    def wall_rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def bench_message(size: int = MESSAGE_SIZE) -> bytes:
    """A marketing message of `size` octets: multipart/alternative, quoted-printable text and
    indented HTML (runs of spaces: the relaxed body rules have work to do), the headers a bulk
    sender sets (List-Unsubscribe, Feedback-ID)."""
    head = (b"From: Example News <news@bench.example>\r\nTo: Reader <reader@example.org>\r\n"
            b"Subject: This week's offers, picked for you\r\n"
            b"Date: Tue, 07 Jan 2025 10:00:00 +0000\r\nMessage-ID: <0123456789abcdef@bench.example>\r\n"
            b"MIME-Version: 1.0\r\nList-Unsubscribe: <https://bench.example/u/0123456789abcdef>\r\n"
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFeedback-ID: c42:news:mp:bench\r\n"
            b"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n")
    text = (b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + b"Hello reader, here are this week=E2=80=99s offers. Prices shown include tax.\r\n" * 20)
    row = (b"    <tr>\r\n      <td style=\"padding: 8px 16px\">Item</td>\r\n"
           b"      <td style=\"text-align: right\">12.00 EUR</td>\r\n    </tr>\r\n")
    html_head = b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html>\r\n  <body>\r\n  <table>\r\n"
    html_tail = b"  </table>\r\n  </body>\r\n</html>\r\n--alt--\r\n"
    room = size - len(head) - len(text) - len(html_head) - len(html_tail)
    rows, rest = divmod(room, len(row))
    if 0 < rest < 9:  # too little room for the filler comment: give it a row's worth
        rows, rest = rows - 1, rest + len(row)
    filler = b"<!--" + b"-" * (rest - 9) + b"-->\r\n" if rest else b""
    return head + text + html_head + row * rows + filler + html_tail


class _OneKeyStore:
    """A DkimKeyStore holding one active key (the signer reads nothing else)."""

    def __init__(self, key: DkimKey) -> None:
        self.key = key

    async def add_dkim_key(self, key: DkimKey) -> None:
        raise NotImplementedError

    async def list_dkim_keys(self, domain: str | None = None, *,
                             active_only: bool = False) -> Sequence[DkimKey]:
        return [self.key]

    async def activate_dkim_key(self, domain: str, selector: str) -> DkimKey:
        raise NotImplementedError

    async def retire_dkim_key(self, domain: str, selector: str, when: datetime) -> DkimKey:
        raise NotImplementedError


def mailprime_rate(key_type: DkimKeyType, seconds: float = SECONDS) -> Rate:
    """Messages of MESSAGE_SIZE signed per CPU second by DkimSigner.sign, on this core (the
    run lasts `seconds` of wall time, as `openssl speed -seconds` does)."""
    pem = generate_private_key(DkimAlgorithm.from_key_type(key_type.value))
    key = DkimKey(domain=DOMAIN, selector="bench", key_type=key_type, private_key=pem,
                  created_at=datetime.now(UTC), active=True)
    signer = DkimSigner(_OneKeyStore(key), SystemClock(), ttl=3600.0)  # as the server's
    message = bench_message()
    assert len(message) == MESSAGE_SIZE, len(message)

    async def loop() -> Rate:
        signed = await signer.sign(message)  # warm-up: loads the key
        assert signed.startswith(b"DKIM-Signature:") and signed.endswith(message)
        count = 0
        start = time.perf_counter()
        cpu_start = time.process_time()
        deadline = start + seconds
        while True:
            for _ in range(20):
                await signer.sign(message)
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                return Rate(count, time.process_time() - cpu_start, now - start)

    return asyncio.run(loop())


_RSA_LINE = re.compile(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+[\d.]+\s*$", re.MULTILINE)
_ED_LINE = re.compile(r"EdDSA \(Ed25519\)\s+\S+s\s+\S+s\s+([\d.]+)\s+[\d.]+\s*$", re.MULTILINE)


def openssl_rate(case: DkimCase, seconds: float = SECONDS) -> Rate:
    """OpenSSL's own sign/s for the algorithm (one process: one core), per user CPU second."""
    done = subprocess.run(["openssl", "speed", "-seconds", str(int(seconds)), case.openssl_arg],
                          capture_output=True, text=True, timeout=seconds * 10 + 60, check=False)
    pattern = _RSA_LINE if case.key_type is DkimKeyType.RSA else _ED_LINE
    found = pattern.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"openssl speed {case.openssl_arg}: no sign/s figure in its output "
                           f"(exit {done.returncode}): {(done.stderr or done.stdout)[-200:]}")
    per_second = float(found.group(1))
    return Rate(round(per_second * seconds), seconds)


def openssl_version() -> str:
    try:
        done = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=30,
                              check=False)
    except OSError:
        return "?"
    return done.stdout.strip() or "?"
