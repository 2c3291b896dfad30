"""DKIM as use cases against a real SQLite store: key generation and rotation (DkimKeys), the
signer's key cache (a rotation reaches it within its TTL, without restart), and signing in the
submission path: a small message and a spooled one, hashed as they stream in, verified by
dkimpy; mail from a domain without keys and mail received on the MX stay unsigned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailprime.domain.dkim import DkimKeyState, DkimKeyType
from mailprime.domain.errors import InvalidAddress, NotFound
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams
from mailprime.services.dkim_keys import DkimKeyRefused, DkimKeys, DkimSigner
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.inject import Injector
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import SqlStore, open_store
from tests.support.dkim_verifiers import Verdict, dkimpy_verify, signatures

INLINE_MAX = 16 * 1024
ALICE = "alice@a.test"
PASSWORD = "alice-password"
REMOTE = "bob@remote.test"


class Clock:
    def __init__(self) -> None:
        self.current = datetime(2026, 7, 14, 9, 30, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current


class Ticks:
    """A monotonic clock the test moves (the signer's cache expiry reads it)."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@asynccontextmanager
async def store_at(tmp: Path) -> AsyncIterator[SqlStore]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool",
                             inline_max=INLINE_MAX)
    try:
        await store.add_domain("a.test")
        await store.add_account(ALICE, hash_password(PASSWORD))
        yield store
    finally:
        await store.close()


async def records(store: SqlStore) -> dict[str, str]:
    return {r.name: r.record for r in await DkimKeys(store, Clock()).records()}


# Key management --------------------------------------------------------------------------------

def test_generate_publish_activate_retire(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            keys = DkimKeys(store, Clock())
            first = await keys.generate("A.Test")
            assert [(k.domain, k.selector, k.key_type, k.state) for k in first] == [
                ("a.test", "mp202607-rsa", DkimKeyType.RSA, DkimKeyState.ACTIVE),
                ("a.test", "mp202607-ed", DkimKeyType.ED25519, DkimKeyState.ACTIVE)]
            # Rotation: the new keys wait, published, while the old ones keep signing.
            second = await keys.generate("a.test")
            assert [(k.selector, k.state) for k in second] == [
                ("mp202607b-rsa", DkimKeyState.PUBLISHED), ("mp202607b-ed", DkimKeyState.PUBLISHED)]
            custom = await keys.generate("a.test", selector="Spare", key_type=DkimKeyType.ED25519)
            assert [(k.selector, k.state) for k in custom] == [("spare", DkimKeyState.PUBLISHED)]
            assert len(await keys.records("a.test")) == 5

            activated, replaced = await keys.activate("a.test", "mp202607b-rsa")
            assert activated.state is DkimKeyState.ACTIVE
            assert [k.selector for k in replaced] == ["mp202607-rsa"]
            with pytest.raises(DkimKeyRefused, match="activate another rsa key first"):
                await keys.retire("a.test", "mp202607b-rsa")
            retired = await keys.retire("a.test", "mp202607-rsa")
            assert retired.state is DkimKeyState.RETIRED
            assert "mp202607-rsa._domainkey.a.test" not in {r.name for r in await keys.records()}
            with pytest.raises(DkimKeyRefused, match="retired"):
                await keys.activate("a.test", "mp202607-rsa")
            with pytest.raises(DkimKeyRefused, match="retired already"):
                await keys.retire("a.test", "mp202607-rsa")
            forced = await keys.retire("a.test", "mp202607b-rsa", force=True)
            assert forced.state is DkimKeyState.RETIRED
            assert {k.selector: k.state for k in await keys.keys("a.test")} == {
                "mp202607-rsa": DkimKeyState.RETIRED, "mp202607-ed": DkimKeyState.ACTIVE,
                "mp202607b-rsa": DkimKeyState.RETIRED, "mp202607b-ed": DkimKeyState.PUBLISHED,
                "spare": DkimKeyState.PUBLISHED}

    run(scenario)


def test_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            keys = DkimKeys(store, Clock())
            await keys.generate("a.test", selector="s1", key_type=DkimKeyType.RSA)
            for call, why in (
                (keys.generate("a.test", selector="s2"), "give --algorithm"),
                (keys.generate("a.test", selector="s_1", key_type=DkimKeyType.RSA), "not a selector"),
                (keys.generate("a.test", selector="S1", key_type=DkimKeyType.ED25519), "never reused"),
            ):
                with pytest.raises(DkimKeyRefused, match=why):
                    await call
            with pytest.raises(InvalidAddress):
                await keys.generate("not a domain")
            with pytest.raises(NotFound):
                await keys.activate("a.test", "nope")

    run(scenario)


# The signer ----------------------------------------------------------------------------------

MESSAGE = (b"From: Alice <alice@a.test>\r\nTo: <bob@remote.test>\r\nSubject: hello\r\n\r\n"
           b"Hello  Bob \r\n\r\n")


def test_signer_follows_rotation_within_its_ttl(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            keys = DkimKeys(store, Clock())
            ticks = Ticks()
            signer = DkimSigner(store, Clock(), ttl=30.0, monotonic=ticks)
            assert await signer.sign(MESSAGE) == MESSAGE  # no keys yet: unchanged
            assert not await signer.signs_anything()
            await keys.generate("a.test", selector="old", key_type=DkimKeyType.RSA)
            ticks.value = 29.0
            assert await signer.sign(MESSAGE) == MESSAGE  # the empty answer is still cached
            ticks.value = 31.0
            signed = await signer.sign(MESSAGE)
            assert [v.selector for v in dkimpy_verify(signed, await records(store))] == ["old"]

            await keys.generate("a.test", selector="new", key_type=DkimKeyType.RSA)
            await keys.activate("a.test", "new")
            ticks.value = 60.0
            assert [t[b"s"] for t in signatures(await signer.sign(MESSAGE))] == [b"old"]
            ticks.value = 62.0
            signed = await signer.sign(MESSAGE)
            assert dkimpy_verify(signed, await records(store)) == [Verdict("new", "rsa-sha256", "pass")]
            assert await signer.sign(MESSAGE.replace(b"a.test>", b"elsewhere.test>")) == \
                MESSAGE.replace(b"a.test>", b"elsewhere.test>")

    run(scenario)


# Signing in the submission and injection paths ----------------------------------------------

def big_message(size: int) -> bytes:
    head = (b"From: Alice <alice@a.test>\r\nTo: <bob@remote.test>\r\nSubject: big\r\n"
            b"MIME-Version: 1.0\r\n\r\n")
    line = b"0123456789 \t  abcdefghij  klmnop \r\n"
    return head + line * (size // len(line)) + b"\r\n\r\n"


async def submit(store: SqlStore, signer: DkimSigner, message: bytes, *, role: str = "submission",
                 sender: str = ALICE, recipient: str = REMOTE) -> bytes:
    service = InboundService(store, InboundConfig("mail.a.test", role), Clock(), dkim=signer)
    session = service.new_session(PeerInfo("127.0.0.1", 40000, role), tls=True)
    await session.on_helo("client.test", True)
    if role == "submission":
        assert (await session.on_auth("PLAIN", "", ALICE, PASSWORD)).ok
    assert (await session.on_mail(sender, MailParams())).code == 250
    assert (await session.on_rcpt(recipient, RcptParams())).code == 250
    assert await session.on_data_start() is None
    for start in range(0, len(message), 7_777):  # pieces that cut lines anywhere
        await session.on_data_chunk(message[start:start + 7_777])
    reply = await session.on_data_end()
    assert reply.code == 250, reply
    queue_id = reply.text.rsplit(" ", 1)[-1]
    queued = await store.get_message(queue_id)  # type: ignore[arg-type]
    assert queued is not None
    return await store.read_blob(queued.blob_id)


@pytest.mark.parametrize("size", [200, 5 * INLINE_MAX], ids=["in memory", "spooled"])
def test_submitted_mail_is_signed_once_at_accept(tmp_path: Path, size: int) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            await DkimKeys(store, Clock()).generate("a.test")
            signer = DkimSigner(store, Clock())
            message = big_message(size)
            stored = await submit(store, signer, message)
            assert stored.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
            assert stored.endswith(message)
            assert dkimpy_verify(stored, await records(store)) == [
                Verdict("mp202607-rsa", "rsa-sha256", "pass"),
                Verdict("mp202607-ed", "ed25519-sha256", "pass")]
            # Message-ID and Date, added at submission, are among the signed fields.
            names = b"".join(signatures(stored)[0][b"h"].split()).split(b":")
            assert b"message-id" in names and b"date" in names

    run(scenario)


def test_what_is_not_signed(tmp_path: Path) -> None:
    """The MX role never signs (mail claiming our domain from outside must not gain our
    signature); a From domain without keys, and mail that stays local, go unsigned."""
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            await DkimKeys(store, Clock()).generate("a.test")
            signer = DkimSigner(store, Clock())
            await store.add_alias("fwd@a.test", REMOTE)
            mx = await submit(store, signer, MESSAGE, role="mx", sender="x@remote.test",
                              recipient="fwd@a.test")
            assert b"DKIM-Signature" not in mx
            foreign = MESSAGE.replace(b"alice@a.test>", b"alice@other.test>")
            assert b"DKIM-Signature" not in await submit(store, signer, foreign)

    run(scenario)


def test_injected_mail_is_signed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store:
            await DkimKeys(store, Clock()).generate("a.test")
            queue_id = await Injector(store, dkim=DkimSigner(store, Clock())).inject(
                "", [REMOTE], MESSAGE.replace(b"Alice <alice@", b"Mail Delivery <mailer-daemon@"))
            assert queue_id is not None
            queued = await store.get_message(queue_id)
            assert queued is not None
            stored = await store.read_blob(queued.blob_id)
            assert [v.result for v in dkimpy_verify(stored, await records(store))] == ["pass", "pass"]

    run(scenario)
