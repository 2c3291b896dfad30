"""DkimSigner.deferred_signer, the two-step signing campaign dispatch uses: the Python part on the
caller's thread, the private-key part on worker threads. The result is what `sign` makes (the
same octets at the same second), dkimpy verifies both signatures, and a key change reaches a
signer asked again once the cache time has passed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from mailprime.domain.dkim import DkimKeyType
from mailprime.services.dkim_keys import DkimKeys, DkimSigner
from mailprime.storage.sql import open_store
from tests.support.dkim_verifiers import dkimpy_verify, signatures


class Clock:
    def __init__(self) -> None:
        self.current = datetime.now(UTC).replace(microsecond=0)  # dkimpy refuses future t=

    def now(self) -> datetime:
        return self.current


class Ticks:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def message(n: int, domain: str = "a.test") -> bytes:
    return (f"From: News <news@{domain}>\r\nTo: r{n}@b.test\r\nSubject: Issue {n}\r\n"
            f"Message-ID: <{n}@{domain}>\r\nMIME-Version: 1.0\r\n\r\n").encode() \
        + b"    Indented   body line\r\n" * 40


def test_deferred_signing_matches_sign_and_verifies_off_the_loop_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'm.db'}", spool_dir=tmp_path / "spool",
                                 inline_max=65536)
        try:
            clock, ticks = Clock(), Ticks()
            keys = DkimKeys(store, clock)
            await keys.generate("a.test")  # RSA-2048 and Ed25519
            txt = {r.name: r.record for r in await keys.records()}
            signer = DkimSigner(store, clock, ttl=30.0, monotonic=ticks)
            prepare = await signer.deferred_signer()
            finishes = [prepare(message(n)) for n in range(8)]  # the Python part, here
            names: set[str] = set()

            def finish_all() -> list[bytes]:
                names.add(threading.current_thread().name)
                return [finish() for finish in finishes]

            with ThreadPoolExecutor(2, thread_name_prefix="signing") as pool:
                signed = await asyncio.get_running_loop().run_in_executor(pool, finish_all)
            assert names and all(n.startswith("signing") for n in names)
            for n, result in enumerate(signed):
                assert result == await signer.sign(message(n))
                assert [v.result for v in dkimpy_verify(result, txt)] == ["pass", "pass"]
                assert [s[b"a"] for s in signatures(result)] == [b"rsa-sha256",
                                                                 b"ed25519-sha256"]
            # No key for the From domain: the message as it was, at both steps.
            assert prepare(message(1, "c.test"))() == message(1, "c.test")

            # A new key replaces the RSA one: a signer asked again after the cache time uses
            # it; the function handed out before keeps the keys it was given.
            await keys.generate("a.test", selector="next", key_type=DkimKeyType.RSA)
            await keys.activate("a.test", "next")
            ticks.value = 31.0
            fresh = await signer.deferred_signer()
            selectors = [s[b"s"] for s in signatures(fresh(message(1))())]
            assert selectors[0] == b"next"
            assert signatures(prepare(message(1))())[0][b"s"] != b"next"
        finally:
            await store.close()

    asyncio.run(scenario())
