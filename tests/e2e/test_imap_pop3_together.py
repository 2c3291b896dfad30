"""IMAP and POP3 sessions on one mailbox at the same time (issue 3: "POP3 and IMAP sessions on one
mailbox do not corrupt each other"): real instance, imaplib over STARTTLS and poplib over STLS,
interleaved step by step on threads, each side seeing the other's deletions the way its protocol
allows — POP3 keeps its login snapshot (RFC 1939) and answers -ERR for a message IMAP expunged;
IMAP learns of POP3's deletions (made at QUIT) as EXPUNGE responses on its next command."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import poplib
from pathlib import Path

import pytest
import trustme

from tests.e2e.test_pop3 import BOB, PASSWORDS, deliver, joined, message, pop3_stls, run_with_instance
from tests.support.instance import Instance

pytestmark = pytest.mark.slow


def imap_login(inst: Instance) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", inst.port("imap"), timeout=20)
    imap.starttls(ssl_context=inst.client_tls())
    imap.login(BOB, PASSWORDS[BOB])
    return imap


def test_imap_and_pop3_on_one_mailbox(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        stored = await deliver(inst, message("one"), message("two"), message("three"),
                               message("four"))

        def interleaved() -> tuple[list[bytes], list[bytes], bytes, list[bytes]]:
            imap = imap_login(inst)
            pop = pop3_stls(inst)
            try:
                assert imap.select("INBOX")[1] == [b"4"]
                assert pop.stat()[0] == 4  # POP3's snapshot: 4 messages
                # IMAP deletes message 1 while POP3 is in its transaction state.
                imap.store("1", "+FLAGS", "(\\Deleted)")
                expunged = imap.expunge()[1]
                with pytest.raises(poplib.error_proto, match=r"(?i)removed"):
                    pop.retr(1)
                second = joined(pop.retr(2)[1])
                # POP3 deletes message 4 (UID 4) and message 2 (UID 2), applied at QUIT.
                pop.dele(4)
                pop.dele(2)
                imap.noop()  # nothing happened yet for IMAP: POP3 deletes only at QUIT
                before_quit = imap.response("EXPUNGE")[1]
                pop.quit()
                # IMAP now sees two expunges, each numbered in its view as it stands then.
                imap.noop()
                after_quit = imap.response("EXPUNGE")[1]
                typ, data = imap.uid("FETCH", "1:*", "(UID)")
                assert typ == "OK"
                return expunged, [x for x in [before_quit] if x and x != [None]] + after_quit, \
                    second, data
            finally:
                with contextlib.suppress(imaplib.IMAP4.error):
                    imap.logout()

        expunged, seen_expunges, second, remaining = await asyncio.to_thread(interleaved)
        assert expunged == [b"1"]
        assert second == stored[1]  # POP3 still read message 2 intact
        # Applied in order to IMAP's view (UIDs 2, 3, 4 after its own expunge), the EXPUNGE
        # responses must remove exactly UIDs 2 and 4, whichever valid order the server chose.
        view = [2, 3, 4]
        for seq in seen_expunges:
            del view[int(seq) - 1]
        assert view == [3]
        assert [line for line in remaining if line] == [b"1 (UID 3)"]
        # The store agrees: only UID 3 is left, and it is whole.
        left = await inst.mailbox(BOB)
        assert [m.uid for m, _ in left] == [3] and left[0][1] == stored[2]

    run_with_instance(tmp_path, ca, body)


def test_pop3_sees_imap_appends_only_in_its_next_session(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        await deliver(inst, message("one"))

        def steps() -> tuple[int, int]:
            pop = pop3_stls(inst)
            imap = imap_login(inst)
            try:
                imap.append("INBOX", None, None, message("appended by imap").replace(
                    b"\r\n", b"\n"))
                during = pop.stat()[0]
            finally:
                pop.quit()
                imap.logout()
            again = pop3_stls(inst)
            try:
                return during, again.stat()[0]
            finally:
                again.quit()

        during, after = await asyncio.to_thread(steps)
        assert (during, after) == (1, 2)

    run_with_instance(tmp_path, ca, body)
