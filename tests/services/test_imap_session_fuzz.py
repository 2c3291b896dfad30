"""Hypothesis drives two sessions and storage with random appends, flag changes, expunges and
commands; the observing session's client-side model (built only from the untagged responses it
received) must always agree with the server: the message count after every command, no EXPUNGE
while answering FETCH, STORE or SEARCH, and the same UIDs and flags as storage at the end."""

from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.mail import FlagMode
from mailprime.proto.imap.types import (
    Expunge,
    Fetch,
    FetchItem,
    Noop,
    Search,
    SearchAll,
    SeqRange,
    SequenceSet,
    Store,
    StoreMode,
)
from tests.services.test_imap_session_harness import MSG, Client, env, wire

ALL = SequenceSet((SeqRange(1, None),))
FLAG_CHOICES = ("\\Seen", "\\Flagged", "\\Deleted", "$Work")

Op = tuple[str, int, str]  # (action, a number to pick messages with, a flag)

ops = st.lists(st.tuples(
    st.sampled_from(["deliver", "other_store", "other_expunge", "store_direct", "expunge_direct",
                     "noop", "fetch", "uid_fetch", "search", "store"]),
    st.integers(min_value=0, max_value=50),
    st.sampled_from(FLAG_CHOICES),
), max_size=25)


@dataclass
class Model:
    """What a client knows from the responses alone."""

    count: int
    flags: dict[int, frozenset[str]] = field(default_factory=dict)  # by UID, from FETCH

    def apply(self, text: str, *, expunge_allowed: bool) -> None:
        for line in text.split("\r\n"):
            if m := re.fullmatch(r"\* (\d+) EXISTS", line):
                assert int(m.group(1)) >= self.count, line
                self.count = int(m.group(1))
            elif m := re.fullmatch(r"\* (\d+) EXPUNGE", line):
                assert expunge_allowed, f"EXPUNGE while answering FETCH/STORE/SEARCH: {text}"
                assert 1 <= int(m.group(1)) <= self.count, line
                self.count -= 1
            elif m := re.fullmatch(r"\* (\d+) FETCH \(.*", line):
                assert 1 <= int(m.group(1)) <= self.count, line


async def _scenario(root: Path, steps: list[Op]) -> None:
    async with env(root) as e:
        inbox = await e.inbox_id()
        for _ in range(3):
            await e.deliver()
        observer, other = Client(e, tls=True, plaintext_login=False), e.client()
        for client in (observer, other):
            await client.login()
            await client.select()
        model = Model(count=3)
        for action, number, flag in steps:
            uids = [m.uid for m in await e.store.messages(inbox)]
            picked = [u for i, u in enumerate(uids) if (number >> (i % 6)) & 1]
            if action == "deliver":
                await e.deliver(MSG)
            elif action == "other_store":
                await other.run(Store(ALL, StoreMode.ADD, True, frozenset({flag})))
            elif action == "other_expunge":
                await other.run(Expunge())
            elif action == "store_direct" and picked:
                await e.store.store_flags(inbox, picked, FlagMode.ADD, frozenset({flag}))
            elif action == "expunge_direct" and picked:
                await e.store.expunge(inbox, picked, only_deleted=False)
            elif action in ("noop", "fetch", "uid_fetch", "search", "store"):
                command = {
                    "noop": Noop(),
                    "fetch": Fetch(ALL, (FetchItem.UID, FetchItem.FLAGS)) if model.count else Noop(),
                    "uid_fetch": Fetch(ALL, (FetchItem.UID, FetchItem.FLAGS), uid=True),
                    "search": Search(SearchAll()),
                    "store": Store(ALL, StoreMode.REMOVE, True, frozenset({flag})) if model.count else Noop(),
                }[action]
                text = await wire(await observer.run(command))
                held = action in ("fetch", "search", "store") and model.count > 0
                model.apply(text, expunge_allowed=not held)
                assert " OK " in text.splitlines()[-1], text
        final = await wire(await observer.run(Noop()))
        model.apply(final, expunge_allowed=True)
        stored = await e.store.messages(inbox)
        assert model.count == len(stored)
        if stored:
            listing = await wire(await observer.run(Fetch(ALL, (FetchItem.UID, FetchItem.FLAGS))))
            seen = re.findall(r"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)", listing)
            assert [(int(s), int(u)) for s, u, _ in seen] == [(i + 1, m.uid) for i, m in enumerate(stored)]
            assert [frozenset(f.split()) for _, _, f in seen] == [m.flags for m in stored]


@settings(max_examples=20, deadline=None)
@given(steps=ops)
def test_the_client_model_never_drifts_from_the_server(steps: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(_scenario(Path(root), steps))
