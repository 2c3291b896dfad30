"""The mailbox benchmark's load: the messages every server holds, and ONE client that drives
IMAP and POP3 sessions against any server, so a ratio compares servers, not clients.

The corpus: `corpus(n)` builds the same n messages on every run (a seeded generator): 4-21 KB,
realistic headers (trace, DKIM, list headers, encoded words), a fifth multipart/alternative,
some multipart/mixed with a base64 attachment, a few body lines starting with "." (so POP3 has
to dot-stuff), CRLF line ends, about 70 % already \\Seen. Each server is given these bytes by its
own means (Maildir files, mailprime's storage API) before its clock starts.

The client: raw asyncio sockets (imaplib/poplib would spend more CPU than the servers and
measure themselves). N clients run sessions back to back, taking the next session number from
one shared counter until the run's total is done; client c logs in as account c (mod the
accounts given), so concurrent clients are different users, as on a real server (and POP3's
RFC 1939 maildrop lock, or a per-account session limit, never turns a session away).

- IMAP session: greeting, `a LOGIN`, `b SELECT INBOX`, `c UID FETCH 1:* (UID FLAGS RFC822.SIZE
  BODY.PEEK[HEADER])` (the headers of all, as a mail client's first sync does; RFC822.SIZE maps
  each UID to its size whatever order the server numbered the messages in), `d UID FETCH <100
  UIDs> (BODY.PEEK[])`, `e UID STORE <10 UIDs> +FLAGS.SILENT (\\Flagged)` (`-FLAGS.SILENT` in
  the client's next session, so the mailbox does not drift), `f LOGOUT`. Literals `{n}` are
  parsed and read exactly.
- POP3 session: greeting, USER/PASS, LIST, RETR 1..n (each to its terminating "."), QUIT.
  No DELE: the maildrop stays as it is.

Correctness is checked cheaply on every session, so a broken server cannot look fast: the number
of messages and the octets of headers and sizes must match the corpus; each body fetched must
have exactly its RFC822.SIZE (or LIST size) octets and, for IMAP, begin with the header fetched
for the same UID. A mismatch raises LoadError and fails the run.

Every session (each read in it included) is bounded by SESSION_TIMEOUT, and a run by its session
count and its time budget (no session starts after it), so nothing waits unbounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

SEED = 20261126
MIN_SIZE, MAX_SIZE = 4 * 1024, 20 * 1024
LINE = 72  # lines stay under RFC 5322 2.1.1's 78 characters (some servers refold longer ones)

_WORD_TEXT = (
    "account action address after again against almost already also although always among "
    "another answer around available back because become before being below between both "
    "business campaign change check client company complete content could customer data "
    "delivery design details different during each early either email enough even every "
    "example experience feature field first follow form found general given great group "
    "happen having help here however important include information inside instead interest "
    "issue just keep kind large later least level likely little local long look made mailbox "
    "major make many market matter message might model month more most move much must need "
    "never news next notice number offer often once only open order other over part people "
    "perhaps place plan point policy possible present price problem product provide public "
    "quite rather really reason receive record report request result return review right same "
    "second section security send server service several should show simple since small "
    "something special start state still subject such support system team than that their "
    "there these thing think those through time today together update upon used user value "
    "very want week well what when where which while whole will with within without work "
    "would year your"
)
_WORDS = tuple(_WORD_TEXT.split())
_NAMES = ("Alice Martin", "Bob Nguyen", "Carla Rossi", "Dev Patel", "Eva Novak", "Farid Haddad",
          "Grace Kim", "Hugo Lefevre", "Ines Garcia", "Jonas Berg", "Keiko Sato", "Liam Walsh")
_SENDERS = ("news.example.com", "shop.example.net", "updates.example.org", "mail.example.io",
            "billing.example.co", "community.example.dev")
_MAILERS = ("mailprime-bench 1.0", "Postfix-list 3.7", "Acme Campaigns 4.2", "Thunderbird 115.5")


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    data: bytes  # the whole message, CRLF line ends, ending with CRLF
    header_octets: int  # the header section including the empty line that ends it
    seen: bool
    received: datetime  # the internal date / delivery time

    @property
    def octets(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a correct server sends of the corpus: message count, octets of all messages and of
    all their header sections (the empty line that ends one included)."""

    count: int
    octets: int
    header_octets: int


@dataclass(frozen=True, slots=True)
class Corpus:
    messages: tuple[CorpusMessage, ...]

    @property
    def count(self) -> int:
        return len(self.messages)

    @property
    def octets(self) -> int:
        return sum(m.octets for m in self.messages)

    def expected(self, *, bare_lf: bool = False) -> Expected:
        """With bare_lf, as sent by a server that serves stored messages with LF line ends."""
        crlf_lines = sum(m.data.count(b"\r\n") for m in self.messages) if bare_lf else 0
        header_lines = sum(m.data.count(b"\r\n", 0, m.header_octets)
                           for m in self.messages) if bare_lf else 0
        return Expected(self.count, self.octets - crlf_lines,
                        sum(m.header_octets for m in self.messages) - header_lines)


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + rng.choice(".!?.")


def _paragraphs(rng: random.Random, octets: int) -> list[str]:
    """Wrapped text of about `octets` octets (CRLF counted), now and then a line with a leading
    dot (POP3 and SMTP must dot-stuff it) or quoted."""
    lines: list[str] = []
    used = 0
    while used < octets:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))
        prefix = rng.choices(("", "> ", ".", ".. "), weights=(90, 6, 3, 1))[0]
        current = prefix
        for word in paragraph.split():
            if len(current) + 1 + len(word) > LINE:
                lines.append(current)
                used += len(current) + 2
                current = word
            else:
                current = f"{current} {word}" if current and current != prefix else current + word
        lines.append(current)
        lines.append("")
        used += len(current) + 4
    return lines


def _encoded_subject(text: str) -> str:
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def _headers(rng: random.Random, index: int, when: datetime, content_type: str) -> list[str]:
    sender_domain = rng.choice(_SENDERS)
    sender_name = rng.choice(_NAMES)
    local = sender_name.split()[0].lower()
    hops = rng.randint(2, 4)
    headers = [f"Return-Path: <bounce-{index}-{rng.getrandbits(32):08x}@{sender_domain}>"]
    for hop in range(hops):
        stamp = format_datetime(when - timedelta(seconds=hops - hop))
        headers += [f"Received: from relay{hop}.{sender_domain}",
                    f"\t(relay{hop}.{sender_domain} [192.0.2.{(index + hop) % 250 + 1}])",
                    f"\tby mx.bench.test with ESMTPS id {rng.getrandbits(48):012X}",
                    f"\tfor <bench@bench.test>; {stamp}"]
    if index % 3 != 2:
        signature = base64.b64encode(rng.randbytes(256)).decode()
        headers += [f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender_domain};",
                    f"\ts=sel{index % 4}; t={int(when.timestamp())}; h=from:to:subject:date:message-id;",
                    f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};"]
        headers += [f"\tb={signature[i:i + 64]}" if i == 0 else f"\t {signature[i:i + 64]}"
                    for i in range(0, len(signature), 64)]
    subject = _sentence(rng)[:60]
    if index % 6 == 1:  # one encoded word of at most 75 characters (RFC 2047 2)
        subject = _encoded_subject(("\u00dcbersicht \u2014 " + subject)[:30])
    headers += [
        f"From: \"{sender_name}\" <{local}@{sender_domain}>",
        "To: Bench User <bench@bench.test>",
        f"Subject: {subject}",
        f"Date: {format_datetime(when - timedelta(seconds=30))}",
        f"Message-ID: <{index}.{rng.getrandbits(40):010x}@{sender_domain}>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        f"X-Mailer: {rng.choice(_MAILERS)}",
    ]
    if index % 2 == 0:
        headers += [f"List-Unsubscribe: <https://{sender_domain}/u/{rng.getrandbits(64):016x}>,",
                    f"\t<mailto:unsubscribe-{index}@{sender_domain}>",
                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                    f"List-Id: <newsletter.{sender_domain}>"]
    if index % 5 == 4:
        headers.append(f"In-Reply-To: <{index - 1}.thread@{sender_domain}>")
    return headers


def _message(rng: random.Random, index: int, when: datetime) -> CorpusMessage:
    target = rng.randint(MIN_SIZE, MAX_SIZE)
    boundary = f"=_bench_{index}_{rng.getrandbits(32):08x}"
    kind = "alternative" if index % 5 == 0 else "mixed" if index % 7 == 3 else "plain"
    if kind == "plain":
        content_type = "text/plain; charset=utf-8"
    else:
        content_type = f'multipart/{kind}; boundary="{boundary}"'
    head = _headers(rng, index, when, content_type)
    head_octets = sum(len(h) + 2 for h in head) + 2
    room = max(target - head_octets, 512)
    if kind == "plain":
        body = _paragraphs(rng, room)
    elif kind == "alternative":
        text = _paragraphs(rng, room // 2)
        html = ["<html><body><p>", *(line or "</p><p>" for line in _paragraphs(rng, room // 2 - 200)),
                "</p></body></html>"]
        body = ["This is a multi-part message in MIME format.", "",
                f"--{boundary}", "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 7bit", "", *text,
                f"--{boundary}", "Content-Type: text/html; charset=utf-8",
                "Content-Transfer-Encoding: 7bit", "", *html, f"--{boundary}--"]
    else:
        attachment = base64.b64encode(rng.randbytes(room // 2)).decode()
        body = [f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "",
                *_paragraphs(rng, room // 3),
                f"--{boundary}", f'Content-Type: application/pdf; name="report-{index}.pdf"',
                "Content-Transfer-Encoding: base64",
                f'Content-Disposition: attachment; filename="report-{index}.pdf"', "",
                *(attachment[i:i + 76] for i in range(0, len(attachment), 76)),
                f"--{boundary}--"]
    data = ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()
    return CorpusMessage(data=data, header_octets=head_octets, seen=rng.random() < 0.7,
                         received=when)


def corpus(count: int, seed: int = SEED) -> Corpus:
    """The same `count` messages for every server and every run."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    return Corpus(tuple(_message(rng, i, start + timedelta(minutes=37 * i)) for i in range(count)))


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------

BODIES_PER_SESSION = 100  # messages fetched whole per IMAP session
FLAGGED_PER_SESSION = 10  # messages whose \Flagged each IMAP session toggles
SESSION_TIMEOUT = 120.0  # one session, including every read in it
STREAM_LIMIT = 64 * 1024 * 1024  # readuntil's buffer bound: larger than any message
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"[( ]UID (\d+)")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.MULTILINE)


class LoadError(RuntimeError):
    """The server answered wrongly (a refused command, or counts that do not match the corpus)."""


@dataclass(frozen=True, slots=True)
class Account:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where a server listens and whom the clients log in as (client c uses accounts[c % n])."""

    host: str
    port: int
    accounts: tuple[Account, ...]
    # The server sends stored messages with bare LF line ends (pymap's Maildir backend does):
    # the expected octets are counted that way.
    bare_lf: bool = False


@dataclass(frozen=True, slots=True)
class MailboxLoad:
    protocol: str  # "imap" or "pop3"
    clients: int  # concurrent clients
    sessions: int  # sessions in the run, all clients together
    # Seconds after which no client starts another session (those running finish): bounds the
    # run's time on a slow server; the rate counts the sessions done.
    budget: float = float("inf")


@dataclass(frozen=True, slots=True)
class MailboxMeasurement:
    """One run: `messages` counts messages transferred (IMAP: headers of all plus the bodies
    fetched; POP3: RETRs), `octets` the literal/RETR octets read."""

    sessions: int
    messages: int
    octets: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sessions / self.seconds

    @property
    def message_rate(self) -> float:
        return self.messages / self.seconds


@dataclass(frozen=True, slots=True)
class _Tally:
    messages: int
    octets: int


class _Connection:
    """One client connection: line and literal reads with the bounds above."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            raise LoadError(f"connection closed by the server after {exc.partial[-200:]!r}") from None

    # -- IMAP ----------------------------------------------------------------------------------
    async def imap_response(self) -> tuple[bytes, list[bytes]]:
        """One response: its text with each literal cut out, and the literals in order."""
        text: list[bytes] = []
        literals: list[bytes] = []
        while True:
            line = await self.line()
            if not line.endswith(b"}\r\n"):
                text.append(line)
                return b"".join(text), literals
            opening = line.rfind(b"{")
            digits = line[opening + 1:-3]
            if opening < 0 or not digits.isdigit():
                text.append(line)
                return b"".join(text), literals
            text.append(line[:opening])
            try:
                literals.append(await self.reader.readexactly(int(digits)))
            except asyncio.IncompleteReadError:
                raise LoadError("connection closed inside a literal") from None

    async def imap(self, tag: bytes, command: bytes) -> list[tuple[bytes, list[bytes]]]:
        """Send one command; return its untagged responses once its tagged OK arrived."""
        self.writer.write(tag + b" " + command + b"\r\n")
        responses: list[tuple[bytes, list[bytes]]] = []
        prefix = tag + b" "
        while True:
            text, literals = await self.imap_response()
            if text.startswith(prefix):
                if text[len(prefix):len(prefix) + 2] != b"OK":
                    raise LoadError(f"{command.split()[0].decode()} failed: {text[:200]!r}")
                return responses
            responses.append((text, literals))

    # -- POP3 ----------------------------------------------------------------------------------
    async def pop3(self, command: bytes) -> bytes:
        self.writer.write(command + b"\r\n")
        return self.pop3_ok(await self.line(), command)

    @staticmethod
    def pop3_ok(reply: bytes, command: bytes) -> bytes:
        if not reply.startswith(b"+OK"):
            shown = command.split()[0].decode()
            raise LoadError(f"POP3 {shown} failed: {reply[:200]!r}")
        return reply


def _imap_quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _uid_set(uids: Sequence[int]) -> bytes:
    return b",".join(str(u).encode() for u in uids)


async def _imap_session(target: Target, account: Account, number: int, client: int,
                        expect: Expected, flag_on: bool) -> _Tally:
    conn = await _Connection.open(target.host, target.port)
    try:
        greeting = await conn.line()
        if not greeting.startswith(b"* OK"):
            raise LoadError(f"IMAP greeting: {greeting[:200]!r}")
        await conn.imap(b"a", b"LOGIN " + _imap_quoted(account.user) + b" "
                        + _imap_quoted(account.password))
        selected = await conn.imap(b"b", b"SELECT INBOX")
        exists = [int(m.group(1)) for text, _ in selected if (m := _EXISTS.match(text))]
        if exists[-1:] != [expect.count]:
            raise LoadError(f"SELECT INBOX: EXISTS {exists} (the corpus has {expect.count})")

        sizes: dict[int, int] = {}
        headers: dict[int, bytes] = {}
        for text, literals in await conn.imap(
                b"c", b"UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])"):
            if not literals:  # a flag update another session caused, not ours
                continue
            uid_found, size_found = _UID.search(text), _SIZE.search(text)
            if uid_found is None or size_found is None:
                raise LoadError(f"FETCH response without UID or RFC822.SIZE: {text[:200]!r}")
            sizes[int(uid_found.group(1))] = int(size_found.group(1))
            headers[int(uid_found.group(1))] = literals[0]
        header_octets = sum(len(h) for h in headers.values())
        if (len(headers), header_octets, sum(sizes.values())) != (
                expect.count, expect.header_octets, expect.octets):
            raise LoadError(f"headers: {len(headers)} messages, {header_octets} header octets,"
                            f" {sum(sizes.values())} octets in RFC822.SIZE; expected"
                            f" {expect.count}, {expect.header_octets}, {expect.octets}")

        uids = sorted(sizes)
        step = max(1, len(uids) // BODIES_PER_SESSION)
        chosen = sorted({uids[(number * 7 + k * step) % len(uids)]
                         for k in range(min(BODIES_PER_SESSION, len(uids)))})
        body_octets = 0
        fetched = 0
        for text, literals in await conn.imap(b"d", b"UID FETCH " + _uid_set(chosen)
                                              + b" (BODY.PEEK[])"):
            if not literals:
                continue
            uid_match = _UID.search(text)
            uid = int(uid_match.group(1)) if uid_match else -1
            body = literals[0]
            if uid not in sizes or len(body) != sizes[uid] or not body.startswith(headers[uid]):
                raise LoadError(f"BODY[] of UID {uid}: {len(body)} octets, expected"
                                f" {sizes.get(uid)} beginning with its header")
            body_octets += len(body)
            fetched += 1
        if fetched != len(chosen):
            raise LoadError(f"BODY[]: {fetched} messages, expected {len(chosen)}")

        flagged = [uids[(client * FLAGGED_PER_SESSION + j) % len(uids)]
                   for j in range(FLAGGED_PER_SESSION)]
        change = b"+FLAGS.SILENT" if flag_on else b"-FLAGS.SILENT"
        await conn.imap(b"e", b"UID STORE " + _uid_set(sorted(set(flagged))) + b" " + change
                        + b" (\\Flagged)")
        await conn.imap(b"f", b"LOGOUT")
        return _Tally(len(headers) + fetched, header_octets + body_octets)
    finally:
        await conn.close()


def _unstuffed_length(data: bytes) -> int:
    """Octets of a RETR's message: the data before ".\\r\\n", less one for each stuffed dot
    (RFC 1939 3: a line starting with "." is sent with one more)."""
    content_end = len(data) - 3
    stuffed = data.count(b"\r\n..", 0, content_end) + data.startswith(b"..")
    return content_end - stuffed


async def _pop3_session(target: Target, account: Account, expect: Expected) -> _Tally:
    conn = await _Connection.open(target.host, target.port)
    try:
        conn.pop3_ok(await conn.line(), b"greeting")
        await conn.pop3(b"USER " + account.user.encode())
        await conn.pop3(b"PASS " + account.password.encode())
        await conn.pop3(b"LIST")
        listed: list[int] = []
        while (line := await conn.line()) != b".\r\n":
            listed.append(int(line.split()[1]))
        if (len(listed), sum(listed)) != (expect.count, expect.octets):
            raise LoadError(f"LIST: {len(listed)} messages of {sum(listed)} octets; expected"
                            f" {expect.count} of {expect.octets}")
        octets = 0
        for number, size in enumerate(listed, 1):
            await conn.pop3(b"RETR %d" % number)
            try:
                data = await conn.reader.readuntil(b"\r\n.\r\n")
            except asyncio.IncompleteReadError:
                raise LoadError(f"RETR {number}: connection closed") from None
            got = _unstuffed_length(data)
            if got != size:
                raise LoadError(f"RETR {number}: {got} octets, LIST said {size}")
            octets += got
        await conn.pop3(b"QUIT")
        return _Tally(len(listed), octets)
    finally:
        await conn.close()


class _SessionNumbers:
    """Shared by all clients: each takes the next session number until the run's count is
    reached or its time budget is spent."""

    def __init__(self, load: MailboxLoad) -> None:
        self.next = 0
        self.total = load.sessions
        self.deadline = time.perf_counter() + load.budget
        self.done = 0

    def __iter__(self) -> Iterator[int]:
        while self.next < self.total and time.perf_counter() < self.deadline:
            self.next += 1
            yield self.next - 1


async def _client(target: Target, load: MailboxLoad, client: int, numbers: _SessionNumbers,
                  expect: Expected) -> _Tally:
    account = target.accounts[client % len(target.accounts)]
    messages = octets = 0
    flag_on = True
    for number in numbers:
        async with asyncio.timeout(SESSION_TIMEOUT):
            if load.protocol == "imap":
                tally = await _imap_session(target, account, number, client, expect, flag_on)
                flag_on = not flag_on
            else:
                tally = await _pop3_session(target, account, expect)
        messages += tally.messages
        octets += tally.octets
        numbers.done += 1
    return _Tally(messages, octets)


async def _run(target: Target, load: MailboxLoad, corpus_: Corpus) -> MailboxMeasurement:
    expect = corpus_.expected(bare_lf=target.bare_lf)
    start = time.perf_counter()
    numbers = _SessionNumbers(load)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_client(target, load, c, numbers, expect))
                 for c in range(load.clients)]
    seconds = time.perf_counter() - start
    tallies = [t.result() for t in tasks]
    return MailboxMeasurement(numbers.done, sum(t.messages for t in tallies),
                              sum(t.octets for t in tallies), seconds)


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def run_load(target: Target, load: MailboxLoad, corpus_: Corpus) -> MailboxMeasurement:
    """Run `load` against the server; raises LoadError (or OSError, TimeoutError) on failure."""
    with _event_loop_runner() as runner:
        try:
            return runner.run(_run(target, load, corpus_))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None


def warm_up(target: Target, protocol: str, corpus_: Corpus) -> None:
    """One untimed session per account, before any clock starts: every server gets the same
    chance to build its indexes and caches, and a broken server fails here, early."""
    load = MailboxLoad(protocol=protocol, clients=len(target.accounts),
                       sessions=len(target.accounts))
    run_load(target, load, corpus_)
