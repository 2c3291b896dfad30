"""Interop with real Postfix, both directions (private instances from tests/support/postfix.py).

Postfix -> mailprime: a Postfix "relay" instance whose relayhost is mailprime's MX port takes mail
from smtplib and relays it into mailprime (plaintext, and with STARTTLS forced by
`smtp_tls_security_level = encrypt`); it pipelines several messages over one cached connection,
and turns mailprime's 550 5.1.1 into a bounce of its own, which it sends back into mailprime.

mailprime -> Postfix: a mailprime instance finds the Postfix domain's MX on the test DNS server
(127.0.0.1) and connects to Postfix's smtpd port (`[delivery] mx_port`); Postfix's "mailbox"
instance files what it accepts into a Maildir. Postfix's mailbox table lists its users, so an
unknown one gets Postfix's own 550 5.1.1, which mailprime turns into a DSN for its sender.

Each test runs its own event loop (`asyncio.run`). Postfix is started, stopped and polled in a
thread (`asyncio.to_thread`) and smtplib runs in a thread, so the mailprime instance keeps serving
on the loop meanwhile. Waiting for an outcome polls a store, a Maildir or a maillog with a
deadline. Skipped with the harness's reason when Postfix cannot run here (not installed, not root).
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.domain.mail import EventKind
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    dsn_field,
    parse,
    parse_dsn,
    running_instance,
    simple_message,
    smtp_send,
    submit,
)
from tests.support.postfix import Mode, PostfixInstance, free_port, postfix_unavailable

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

ALICE = "alice@a.test"  # mailprime's submitting user (direction mailprime -> Postfix)
BOB = "bob@b.test"  # mailprime's MX users (direction Postfix -> mailprime)
CAROL = "carol@b.test"
NOBODY = "nobody@b.test"  # no such user on mailprime: 550 5.1.1

PF_DOMAIN = "p.test"  # Postfix's mailbox domain
PF_MX = "mx.p.test"
PF_BOB = "bob@p.test"
PF_CAROL = "carol@p.test"
PF_ZOE = "zoë@p.test"  # a UTF-8 local part: needs SMTPUTF8 end to end (RFC 6531)
PF_NOBODY = "nobody@p.test"  # not in Postfix's mailbox table: 550 5.1.1

# How long a test waits for Postfix to log or deliver something (it retries every second).
PF_DEADLINE = 20.0
FINAL = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED)


@pytest.fixture(autouse=True)
def _needs_postfix() -> None:
    if reason := postfix_unavailable():
        pytest.skip(reason)


# Helpers ------------------------------------------------------------------------------------

@asynccontextmanager
async def postfix(tmp: Path, *, mydomain: str, mode: Mode, main_cf: Mapping[str, str],
                  smtpd_port: int | None = None,
                  relay_to: tuple[str, int] | None = None) -> AsyncIterator[PostfixInstance]:
    """A started PostfixInstance; start and close run in a thread so the loop keeps serving."""
    pf = PostfixInstance(tmp, smtpd_port=smtpd_port or free_port(), mydomain=mydomain, mode=mode,
                         relay_to=relay_to, main_cf=main_cf)
    await asyncio.to_thread(pf.__enter__)  # closes the instance itself when start fails
    try:
        yield pf
    finally:
        await asyncio.to_thread(pf.close)


async def pf_log(pf: PostfixInstance, text: str) -> str:
    """Waits until Postfix's maillog contains text; returns the whole log."""
    return await asyncio.to_thread(pf.wait_log, text, PF_DEADLINE)


async def pf_messages(pf: PostfixInstance, count: int, recipient: str) -> list[bytes]:
    return await asyncio.to_thread(pf.wait_for, count, PF_DEADLINE, recipient=recipient)


def postfix_queued_as(reply: str) -> str:
    match = re.search(r"queued as ([0-9A-Za-z]+)", reply)
    assert match is not None, reply
    return match.group(1)


async def send_into_postfix(pf: PostfixInstance, sender: str, recipients: Sequence[str],
                            message: bytes) -> str:
    """smtplib into Postfix's smtpd, plaintext, no AUTH (127.0.0.0/8 is in mynetworks); returns
    Postfix's queue id."""
    result = await asyncio.to_thread(
        smtp_send, *pf.address, ctx=ssl.create_default_context(), sender=sender,
        recipients=recipients, message=message, starttls=False)
    assert result.code == 250 and not result.refused, result
    return postfix_queued_as(result.text)


def _submit_with_options(inst: Instance, user: str, sender: str, recipients: Sequence[str],
                         message: bytes, options: Sequence[str]) -> str:
    """Blocking: submission with STARTTLS and AUTH, MAIL FROM carrying `options` (SMTPUTF8,
    BODY=8BITMIME); returns mailprime's reply to the message. smtplib switches its command
    encoding to UTF-8 when SMTPUTF8 is asked for and offered."""
    with smtplib.SMTP("127.0.0.1", inst.port("submission"), timeout=10) as client:
        client.ehlo("client.test")
        client.starttls(context=inst.client_tls())
        client.ehlo("client.test")
        client.login(user, inst.accounts[user])
        for keyword in ("smtputf8", "8bitmime"):
            assert client.has_extn(keyword), f"mailprime does not offer {keyword}"
        code, reply = client.mail(sender, list(options))
        assert code == 250, reply
        for rcpt in recipients:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        code, reply = client.data(message)
        assert code == 250, reply
    return reply.decode("utf-8", "replace")


def received_fields(message: bytes) -> list[str]:
    return [" ".join(str(r).split()) for r in parse(message).get_all("Received") or []]


def mailprime_queue_id(received: str) -> str:
    match = re.search(r"\(mailprime\) with \S+ id (\S+)", received)
    assert match is not None, received
    return match.group(1)


def lf(message: bytes) -> bytes:
    """Maildir files have LF line ends; compare what we sent in that form."""
    return message.replace(b"\r\n", b"\n")


# Postfix -> mailprime -----------------------------------------------------------------------

@asynccontextmanager
async def postfix_relaying_into_mailprime(
        tmp: Path, ca: trustme.CA, main_cf: Mapping[str, str] | None = None, *,
        cache_connection: bool = False) -> AsyncIterator[tuple[Instance, PostfixInstance]]:
    """mailprime for b.test (bob, carol) and a Postfix relay whose relayhost is its MX port.
    `cache_connection` makes Postfix keep its connection to mailprime open between messages
    (the next-hop is "[127.0.0.1]:port", known only once mailprime listens)."""
    async with running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                                accounts={BOB: "bob-secret", CAROL: "carol-secret"}) as b:
        mx_port = b.port("mx")
        cf = {"smtp_tls_loglevel": "1", **(main_cf or {})}
        if cache_connection:
            cf["smtp_connection_cache_destinations"] = "127.0.0.1"
        async with postfix(tmp, mydomain="relay.test", mode="relay",
                           relay_to=("127.0.0.1", mx_port), main_cf=cf) as relay:
            yield b, relay


def client_dialogue(log: str, peer: str) -> list[tuple[str, str]]:
    """Postfix's SMTP client conversation with peer from its verbose log (debug_peer_list):
    (">", command) for what it wrote, ("<", reply) for what it read, in order."""
    dialogue = []
    for line in log.splitlines():
        if "postfix/smtp[" not in line:
            continue
        for direction in (">", "<"):
            marker = f": {direction} {peer}: "
            if marker in line:
                dialogue.append((direction, line.split(marker, 1)[1]))
    return dialogue


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "starttls"])
def test_postfix_relays_into_mailprime_mx(tmp_path: Path, ca: trustme.CA, tls: bool) -> None:
    # "encrypt": Postfix must use STARTTLS and would defer rather than send in the clear; it does
    # not verify the certificate at this level (RFC 7435 opportunistic, but mandatory).
    main_cf = {"smtp_tls_security_level": "encrypt"} if tls else {}

    async def scenario() -> None:
        async with postfix_relaying_into_mailprime(tmp_path, ca, main_cf) as (b, relay):
            mx_port = b.port("mx")
            pf_qid = await send_into_postfix(
                relay, "alice@relay.test", [BOB],
                simple_message("alice@relay.test", BOB, "Through Postfix"))

            ((_stored, content),) = await b.wait_mailbox(BOB, 1)
            assert parse(content)["Subject"] == "Through Postfix"
            mine, theirs = received_fields(content)
            # mailprime's trace field on top, Postfix's beneath it (RFC 5321 4.4).
            keyword = "ESMTPS" if tls else "ESMTP"
            assert mine.startswith(f"from postfix-{relay.smtpd_port}.relay.test ")
            assert f"by mx.b.test (mailprime) with {keyword} id " in mine
            assert f"for <{BOB}>" in mine
            assert f"by postfix-{relay.smtpd_port}.relay.test (Postfix) with ESMTP id {pf_qid}" \
                in theirs
            qid = mailprime_queue_id(mine)
            assert [(e.kind, e.recipient) for e in await b.events(qid)] == [
                (EventKind.STORED, BOB)]

            # Postfix logs mailprime's 250 with the queue id the Received field names.
            log = await pf_log(relay, f"{pf_qid}: to=<{BOB}>")
            (line,) = [ln for ln in log.splitlines() if f"{pf_qid}: to=<{BOB}>" in ln]
            assert f"relay=127.0.0.1[127.0.0.1]:{mx_port}" in line
            assert f"status=sent (250 2.0.0 Ok: queued as {qid})" in line
            established = f"TLS connection established to 127.0.0.1[127.0.0.1]:{mx_port}"
            assert (established in log) is tls

    asyncio.run(scenario())


def test_postfix_pipelines_several_messages_over_one_connection(tmp_path: Path,
                                                                ca: trustme.CA) -> None:
    # Postfix holds the messages back (defer_transports) until `postqueue -f` releases them all
    # at once; one connection at a time to the destination, cached between messages, and the
    # client's side of the conversation logged (debug_peer_list) to show what it pipelined.
    main_cf = {
        "defer_transports": "smtp",
        "smtp_destination_concurrency_limit": "1",
        "debug_peer_list": "127.0.0.1",
    }
    subjects = [f"Batch {i}" for i in range(3)]

    async def scenario() -> None:
        async with postfix_relaying_into_mailprime(tmp_path, ca, main_cf,
                                                   cache_connection=True) as (b, relay):
            mx_port = b.port("mx")
            pf_qids = []
            for subject in subjects:
                pf_qids.append(await send_into_postfix(
                    relay, "alice@relay.test", [BOB, CAROL],
                    simple_message("alice@relay.test", BOB, subject)))
            for pf_qid in pf_qids:
                await pf_log(relay, f"{pf_qid}: to=<{CAROL}>, relay=none")  # held back
            assert await b.mailbox(BOB) == []
            await asyncio.to_thread(relay.flush)

            to_bob = await b.wait_mailbox(BOB, 3)
            to_carol = await b.wait_mailbox(CAROL, 3)
            assert sorted(parse(c)["Subject"] for _s, c in to_bob) == subjects
            assert [c for _s, c in to_bob] == [c for _s, c in to_carol]  # one copy, two rcpts

            for pf_qid in pf_qids:
                log = await pf_log(relay, f"{pf_qid}: to=<{CAROL}>, relay=127.0.0.1")
            sent = [ln for ln in log.splitlines() if "status=sent" in ln]
            assert len(sent) == 6
            for pf_qid in pf_qids:
                # One transaction per message: both recipients got mailprime's one 250 for it.
                replies = {ln.split("status=sent ", 1)[1] for ln in sent if f" {pf_qid}: " in ln}
                assert len(replies) == 1, replies
                assert next(iter(replies)).startswith("(250 2.0.0 Ok: queued as ")
            # One connection: the second and third message reused the first one's.
            uses = sorted(int(m) for m in re.findall(r"conn_use=(\d+)", "\n".join(sent)))
            assert uses == [2, 2, 3, 3], sent

            dialogue = client_dialogue(log, f"127.0.0.1[127.0.0.1]:{mx_port}")
            assert sum(text.startswith("EHLO ") for _d, text in dialogue) == 1
            assert ("<", "250-PIPELINING") in dialogue
            # Pipelining (RFC 2920): for every message the client wrote MAIL, both RCPTs and
            # DATA before it read the reply to MAIL, then got the four replies in order.
            starts = [i for i, (_d, text) in enumerate(dialogue) if text.startswith("MAIL FROM:")]
            assert len(starts) == 3
            for i in starts:
                batch = dialogue[i:i + 8]
                assert [(d, text.split(":")[0].split()[0]) for d, text in batch] == [
                    (">", "MAIL"), (">", "RCPT"), (">", "RCPT"), (">", "DATA"),
                    ("<", "250"), ("<", "250"), ("<", "250"), ("<", "354")], batch

    asyncio.run(scenario())


def test_postfix_bounces_a_recipient_mailprime_rejects(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with postfix_relaying_into_mailprime(tmp_path, ca) as (b, relay):
            mx_port = b.port("mx")
            # Carol (a mailprime user) sends through Postfix to bob and to a user mailprime
            # does not have; Postfix's bounce for that one travels back into carol's INBOX.
            pf_qid = await send_into_postfix(relay, CAROL, [BOB, NOBODY],
                                             simple_message(CAROL, NOBODY, "Half of it bounces"))
            ((_s, delivered),) = await b.wait_mailbox(BOB, 1)
            assert parse(delivered)["Subject"] == "Half of it bounces"

            log = await pf_log(relay, f"{pf_qid}: to=<{NOBODY}>")
            (line,) = [ln for ln in log.splitlines() if f"{pf_qid}: to=<{NOBODY}>" in ln]
            assert f"relay=127.0.0.1[127.0.0.1]:{mx_port}" in line
            assert "status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 " \
                   f"<{NOBODY}>: Recipient address rejected: User unknown " \
                   "(in reply to RCPT TO command))" in line
            assert f"{pf_qid}: sender non-delivery notification: " in log

            ((_s2, content),) = await b.wait_mailbox(CAROL, 1)
            dsn = parse_dsn(content)  # Postfix's own RFC 3464 report
            assert dsn.message["Subject"] == "Undelivered Mail Returned to Sender"
            assert dsn.message["From"].addresses[0].username == "MAILER-DAEMON"
            assert dsn_field(dsn.per_message, "Reporting-MTA") == \
                f"dns; postfix-{relay.smtpd_port}.relay.test"
            (status,) = dsn.per_recipient
            assert dsn_field(status, "Final-Recipient") == f"rfc822; {NOBODY}"
            assert dsn_field(status, "Action") == "failed"
            assert dsn_field(status, "Status") == "5.1.1"
            assert dsn_field(status, "Diagnostic-Code") == (
                f"smtp; 550 5.1.1 <{NOBODY}>: Recipient address rejected: User unknown")
            # The bounce came from the null sender; mailprime's trace field says so by its place
            # on top of Postfix's, and the returned original names the failed transaction.
            mine = received_fields(content)[0]
            assert "by mx.b.test (mailprime)" in mine and f"for <{CAROL}>" in mine
            assert "Subject: Half of it bounces" in content.decode("utf-8", "replace")
            assert len(await b.mailbox(BOB)) == 1  # bob's copy once, nothing more

    asyncio.run(scenario())


# mailprime -> Postfix -----------------------------------------------------------------------

@asynccontextmanager
async def mailprime_delivering_into_postfix(
        tmp: Path, ca: trustme.CA, dns: DnsTestServer, *,
        tls: bool = True,
        extra_cf: Mapping[str, str] | None = None) -> AsyncIterator[tuple[Instance, PostfixInstance]]:
    """Postfix's mailbox instance for p.test (MX mx.p.test -> 127.0.0.1 on the test DNS) and
    mailprime for a.test whose outbound MX port is Postfix's smtpd port. With `tls`, Postfix
    offers STARTTLS with a certificate from the test CA; `extra_cf` adds main.cf settings."""
    dns.zone.add_mx(PF_DOMAIN, 10, PF_MX)
    dns.zone.add_a(PF_MX, "127.0.0.1")
    # Postfix's table lists its users: anyone else is "User unknown in virtual mailbox table".
    users = ", ".join(f"{u}=maildir/" for u in (PF_BOB, PF_CAROL, PF_ZOE))
    main_cf = {
        "virtual_mailbox_maps": f"inline:{{ {users} }}",
        "smtputf8_enable": "yes",  # advertise SMTPUTF8 (RFC 6531); explicit, not the default
        "smtpd_tls_loglevel": "1",
        **(extra_cf or {}),
    }
    if tls:
        cert = ca.issue_cert(PF_MX)
        tls_dir = tmp / "postfix-tls"
        tls_dir.mkdir()
        cert.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tls_dir / "cert.pem"))
        main_cf |= {
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(tls_dir / "cert.pem"),
            "smtpd_tls_key_file": str(tls_dir / "key.pem"),
        }
    port = free_port()
    async with (
        postfix(tmp, smtpd_port=port, mydomain=PF_DOMAIN, mode="mailbox", main_cf=main_cf) as pf,
        running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                         accounts={ALICE: "alice-secret"}, nameservers=[dns.address],
                         mx_port=port) as a,
    ):
        # Without VERP: these tests read one transaction and the sender's own address on
        # Postfix's side (with VERP each recipient has its own; tests/e2e/test_bounce_events).
        a.server.worker.verp = None
        yield a, pf


@pytest.mark.parametrize("tls", [True, False], ids=["starttls", "plaintext"])
def test_mailprime_delivers_into_postfix(tmp_path: Path, ca: trustme.CA,
                                         dns_server: DnsTestServer, tls: bool) -> None:
    async def scenario() -> None:
        async with mailprime_delivering_into_postfix(tmp_path, ca, dns_server, tls=tls) as (a, pf):
            result = await submit(a, ALICE, ALICE, [PF_BOB, PF_CAROL],
                                  simple_message(ALICE, PF_BOB, "To Postfix"))
            qid = result.queue_id
            events = await a.wait_events(qid, FINAL, count=2)
            delivered = [e for e in events if e.kind is EventKind.DELIVERED]
            assert sorted(str(e.recipient) for e in delivered) == [PF_BOB, PF_CAROL]
            # Several recipients, one transaction: Postfix answered one DATA with one queue id.
            (pf_qid,) = {postfix_queued_as(e.detail) for e in delivered}
            # Postfix offers CHUNKING and mailprime sent BDAT: Postfix's reply to BDAT LAST
            # counts the octets ("Ok: N bytes queued as"), its reply to DATA does not.
            assert all(re.match(r"250 2\.0\.0 Ok: \d+ bytes queued as ", e.detail)
                       for e in delivered), [e.detail for e in delivered]
            assert all(dict(e.attrs)["remote_host"] == f"{PF_MX}[127.0.0.1]:{pf.smtpd_port}"
                       for e in delivered)

            (to_bob,) = await pf_messages(pf, 1, PF_BOB)
            (to_carol,) = await pf_messages(pf, 1, PF_CAROL)
            theirs, mine = received_fields(to_bob)
            keyword = "ESMTPS" if tls else "ESMTP"
            assert theirs.startswith("from mail.a.test (unknown [127.0.0.1]) ")
            assert f"(Postfix) with {keyword} id {pf_qid};" in theirs  # no "for": two rcpts
            assert f"by mail.a.test (mailprime) with ESMTPSA id {qid};" in mine
            assert parse(to_bob)["Subject"] == "To Postfix"
            assert received_fields(to_carol) == received_fields(to_bob)

            log = await pf_log(pf, f"{pf_qid}: to=<{PF_CAROL}>")
            assert f"{pf_qid}: client=unknown[127.0.0.1]" in log
            assert sum(f"{pf_qid}: to=<" in ln and "status=sent" in ln
                       for ln in log.splitlines()) == 2
            established = "TLS connection established from unknown[127.0.0.1]"
            assert (established in log) is tls

    asyncio.run(scenario())


def test_mailprime_relays_8bit_and_smtputf8_into_postfix(tmp_path: Path, ca: trustme.CA,
                                                         dns_server: DnsTestServer) -> None:
    body_8bit = ("Grüße aus Köln — naïve café.\r\n").encode()
    eight_bit = (f"From: <{ALICE}>\r\nTo: <{PF_BOB}>\r\nSubject: 8-bit body\r\n"
                 "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body_8bit
    # RFC 6532: with SMTPUTF8 the header section itself may carry UTF-8.
    international = (f"From: Alice <{ALICE}>\r\nTo: Zoë <{PF_ZOE}>\r\nSubject: Ça marche, Zoë\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n\r\nΓειά σου.\r\n").encode()

    async def scenario() -> None:
        # debug_peer_list: Postfix's smtpd logs each command it reads, MAIL FROM's parameters too.
        async with mailprime_delivering_into_postfix(
                tmp_path, ca, dns_server, extra_cf={"debug_peer_list": "127.0.0.1"}) as (a, pf):
            reply = await asyncio.to_thread(_submit_with_options, a, ALICE, ALICE, [PF_BOB],
                                            eight_bit, ["BODY=8BITMIME"])
            qid_8bit = postfix_queued_as(reply)
            reply = await asyncio.to_thread(_submit_with_options, a, ALICE, ALICE, [PF_ZOE],
                                            international, ["SMTPUTF8", "BODY=8BITMIME"])
            qid_utf8 = postfix_queued_as(reply)
            for qid in (qid_8bit, qid_utf8):
                events = await a.wait_events(qid, FINAL)
                assert events[-1].kind is EventKind.DELIVERED, events[-1]

            # The 8-bit body arrives octet for octet: no downgrade to quoted-printable.
            (to_bob,) = await pf_messages(pf, 1, PF_BOB)
            assert to_bob.endswith(b"\n\n" + lf(body_8bit))
            theirs, mine = received_fields(to_bob)[:2]
            assert "(Postfix) with ESMTPS id " in theirs and f"for <{PF_BOB}>" in theirs
            assert f"(mailprime) with ESMTPSA id {qid_8bit}" in mine

            # The UTF-8 recipient went out with SMTPUTF8: Postfix's trace field says UTF8SMTPS
            # (RFC 6531 3.7.3), and the UTF-8 header section is unchanged.
            (to_zoe,) = await pf_messages(pf, 1, PF_ZOE)
            assert to_zoe.endswith(lf(international)), to_zoe
            theirs, mine = received_fields(to_zoe)[:2]
            assert "(Postfix) with UTF8SMTPS id " in theirs and f"for <{PF_ZOE}>" in theirs
            assert f"(mailprime) with UTF8SMTPSA id {qid_utf8}" in mine
            assert parse(to_zoe)["Subject"] == "Ça marche, Zoë"

            # What mailprime declared on the wire: BODY=8BITMIME for the 8-bit body (RFC 6152),
            # SMTPUTF8 with it for the international one (RFC 6531 3.4).
            log = pf.log()
            mails = [ln.split(": < unknown[127.0.0.1]: ", 1)[1] for ln in log.splitlines()
                     if "postfix/smtpd[" in ln and ": < unknown[127.0.0.1]: MAIL FROM:" in ln]
            # The two deliveries may overlap, so their order in the log is not fixed.
            shapes = sorted(re.sub(r"SIZE=\d+", "SIZE=n", m) for m in mails)
            assert shapes == [f"MAIL FROM:<{ALICE}> SIZE=n BODY=8BITMIME",
                              f"MAIL FROM:<{ALICE}> SIZE=n BODY=8BITMIME SMTPUTF8"], mails
            assert f"RCPT TO:<{PF_ZOE}>" in log

    asyncio.run(scenario())


def test_recipient_postfix_rejects_bounces_back_as_dsn(tmp_path: Path, ca: trustme.CA,
                                                       dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with mailprime_delivering_into_postfix(tmp_path, ca, dns_server) as (a, pf):
            result = await submit(a, ALICE, ALICE, [PF_BOB, PF_NOBODY],
                                  simple_message(ALICE, PF_NOBODY, "Is anyone there?"))
            qid = result.queue_id
            events = await a.wait_events(qid, FINAL, count=2)
            outcome = {e.recipient: e for e in events if e.kind in FINAL}
            assert outcome[PF_BOB].kind is EventKind.DELIVERED
            assert outcome[PF_NOBODY].kind is EventKind.BOUNCED
            postfix_reply = (f"550 5.1.1 <{PF_NOBODY}>: Recipient address rejected: "
                             "User unknown in virtual mailbox table")
            assert outcome[PF_NOBODY].detail == postfix_reply
            await pf_log(pf, f"reject: RCPT from unknown[127.0.0.1]: {postfix_reply};")
            assert len(await pf_messages(pf, 1, PF_BOB)) == 1
            assert pf.messages(PF_NOBODY) == []

            ((_stored, content),) = await a.wait_mailbox(ALICE, 1)
            dsn = parse_dsn(content)
            assert dsn.message["To"].addresses[0].addr_spec == ALICE
            assert dsn_field(dsn.per_message, "Reporting-MTA") == "dns; mail.a.test"
            (status,) = dsn.per_recipient  # only the failed recipient is reported
            assert dsn_field(status, "Final-Recipient") == f"rfc822; {PF_NOBODY}"
            assert dsn_field(status, "Action") == "failed"
            assert dsn_field(status, "Status") == "5.1.1"
            assert dsn_field(status, "Remote-MTA") == f"dns; {PF_MX}"
            assert dsn_field(status, "Diagnostic-Code") == f"smtp; {postfix_reply}"
            assert "Subject: Is anyone there?" in dsn.parts[2].get_content()

    asyncio.run(scenario())
