"""mailprime's half of the IMAP and POP3 cases: a real `mailprime serve` process (the command an
operator runs), configured under the bench work dir with only its IMAP and POP3 listeners, on
free loopback ports, plain TCP, with plaintext login allowed because they are loopback-only.

Before the server starts, `_provision` creates the bench accounts with the SAME Argon2id hash
string the peers verify, and stores the corpus through the storage API: appended to the first
account's INBOX (flags and internal dates as in the corpus; every append a durable transaction,
concurrent ones sharing a group commit), then copied into every other account's INBOX (the
content is shared, as the peers' Maildirs share it through hard links).

Workers: like the SMTP cases, `MAILPRIME_BENCH_WORKERS` (default 0 = one process per core).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.postfix import free_port
from tests.support.serve import serving

from bench.mailbox_load import Account, Corpus, Target
from bench.mailprime_side import WORKERS
from mailprime.config import load_settings
from mailprime.domain.ids import MailboxId
from mailprime.storage.sql import open_store

APPEND_BATCH = 50  # appends in flight while loading the corpus (they share group commits)


def wired_protocols() -> list[str]:
    """The mailbox protocols mailprime's config has listener roles for (they land one by one)."""
    from mailprime import config  # noqa: PLC0415

    roles = {role.value for role in config.Role}
    return [p for p in ("imap", "pop3") if p in roles]


def _listeners(ports: dict[str, int]) -> str:
    return "".join(f"""
[[listeners]]
name = "{name}"
role = "{name}"
address = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext_auth_on_loopback = true
""" for name, port in ports.items())


def _config(workdir: Path, *, ports: dict[str, int], workers: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mailprime.toml"
    config.write_text(f"""
[server]
hostname = "bench.mailprime.test"
workers = {workers}
{_listeners(ports)}
[limits]
max_connections_per_ip = 200

[log]
level = "WARNING"
""")
    return config


async def _provision(config: Path, accounts: Sequence[Account], password_hash: str,
                     corpus: Corpus) -> None:
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        domains = sorted({a.user.partition("@")[2] for a in accounts})
        for domain in domains:
            await store.add_domain(domain)
        inboxes: list[MailboxId] = []
        for account in accounts:
            created = await store.add_account(account.user, password_hash)
            inbox = await store.get_mailbox(created.id, "INBOX")
            if inbox is None:
                raise RuntimeError(f"account {account.user} has no INBOX")
            inboxes.append(inbox.id)
        first = inboxes[0]
        messages = corpus.messages
        uids: list[int] = []
        for start in range(0, len(messages), APPEND_BATCH):
            stored = await asyncio.gather(*(
                store.append_message(first, m.data, internal_date=m.received,
                                     flags=frozenset({"\\Seen"}) if m.seen else frozenset())
                for m in messages[start:start + APPEND_BATCH]))
            uids.extend(s.uid for s in stored)
        for other in inboxes[1:]:
            await store.copy_messages(first, uids, other)
    finally:
        await store.close()


@contextmanager
def mailprime_mailbox(workdir: Path, accounts: Sequence[Account], password_hash: str,
                      corpus: Corpus) -> Iterator[dict[str, Target]]:
    """mailprime serving the corpus; yields a target per protocol it has listeners for
    (NotImplementedError while it has none)."""
    protocols = wired_protocols()
    if not protocols:
        raise NotImplementedError("mailprime: not wired yet (no IMAP or POP3 listener role)")
    ports = {protocol: free_port() for protocol in protocols}
    config = _config(workdir, ports=ports, workers=WORKERS)
    asyncio.run(_provision(config, accounts, password_hash, corpus))
    with serving(config):
        time.sleep(0.3)  # let every worker process bind (SO_REUSEPORT) before the load
        yield {protocol: Target("127.0.0.1", port, tuple(accounts))
               for protocol, port in ports.items()}


def warnings_logged(workdir: Path) -> list[str]:
    """What `mailprime serve` logged (at level WARNING and above: a bench run should log nothing)."""
    log = workdir / "serve.log"
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
