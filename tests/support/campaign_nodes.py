"""`mailprime serve` nodes for the campaign proofs (tests/e2e/test_campaign_10k.py and
test_campaign_sigkill.py): a configuration file for a sender or a receiving MX on loopback, the
receiver's catch-all provisioning, and reading a node's store back from the test process.

A node's store is opened from its configuration file exactly as the CLI opens it, so reading a
receiver's mailbox needs no IMAP session (10,000 FETCHes would cost more than the campaign).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mailprime.config import load_settings
from mailprime.services.passwords import hash_password
from mailprime.storage.ports import Store
from mailprime.storage.sql import open_store


def write_node_config(data: Path, *, hostname: str, mx_port: int, dns: str,
                      delivery_mx_port: int = 25, extra: str = "") -> Path:
    """A one-listener node (plain MX on loopback: no TLS handshake per delivery, the proofs are
    about what arrives, not about TLS) whose look-ups go to the loopback DNS server `dns`, with
    fast delivery retries. `extra` is appended verbatim (more TOML sections)."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / "mailprime.toml"
    config.write_text(f"""
[server]
hostname = "{hostname}"
data_dir = "."

[[listeners]]
name = "mx"
role = "mx"
port = {mx_port}
tls = "none"

[dns]
nameservers = ["{dns}"]
timeout = 2.0

[delivery]
mx_port = {delivery_mx_port}
retry_first = 1
retry_max_interval = 2
poll_interval = 0.2
connect_timeout = 3.0
{extra}
""")
    return config


@asynccontextmanager
async def node_store(config: Path) -> AsyncIterator[Store]:
    """The node's store, opened as the CLI opens it (the node may be running: SQLite WAL)."""
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        yield store
    finally:
        await store.close()


async def provision_catch_all(config: Path, domain: str, sink: str) -> None:
    """`domain` local, one account `sink`, and every address of `domain` aliased to it."""
    async with node_store(config) as store:
        await store.add_domain(domain)
        await store.add_account(sink, hash_password("sink-secret"))
        await store.add_alias(f"@{domain}", sink)


@dataclass(frozen=True)
class Received:
    """One message in the sink, with the header fields the proofs look at (each the first of
    its name: the receiver's own Authentication-Results is the topmost one)."""

    content: bytes
    to: str  # addr-spec of To
    message_id: str
    subject: str
    auth_results: str


_FOLD = re.compile(rb"\r\n[ \t]+")


def received(content: bytes) -> Received:
    """Unfolds the header section and picks the fields: about 20 times cheaper than the email
    package's header parser, which matters at 10,000 messages. Values are whitespace-normalised
    and not MIME-decoded (the campaign's fields are ASCII)."""
    end = content.find(b"\r\n\r\n")
    fields: dict[bytes, str] = {}
    for line in _FOLD.sub(b" ", content[:end] if end >= 0 else content).split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(),
                              " ".join(value.decode("utf-8", "replace").split()))
    to = fields.get(b"to", "")
    if "<" in to:
        to = to.rsplit("<", 1)[1].split(">", 1)[0]
    return Received(content, to.strip(), fields.get(b"message-id", ""),
                    fields.get(b"subject", ""), fields.get(b"authentication-results", ""))


async def mailbox_contents(config: Path, address: str, mailbox: str = "INBOX",
                           chunk: int = 1000) -> list[bytes]:
    """Every message in `address`'s `mailbox` on the node, in UID order: `message_contents`
    reads a range of UIDs in one query (POP3's read-ahead), ~20 times faster than a
    `read_blob` per message."""
    async with node_store(config) as store:
        account = await store.get_account(address)
        assert account is not None, f"no account {address}"
        box = await store.get_mailbox(account.id, mailbox)
        assert box is not None, f"no mailbox {address}/{mailbox}"
        uids = [m.uid for m in await store.message_listing(box.id)]
        out: list[bytes] = []
        for start in range(0, len(uids), chunk):
            part = uids[start:start + chunk]
            contents = await store.message_contents(box.id, part[0], part[-1])
            for uid in part:
                content = contents[uid]
                out.append(content if isinstance(content, bytes)
                           else await store.read_blob(content))  # a spooled (large) one
        return out

