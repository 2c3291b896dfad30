"""The logging promises of issue 2, checked on real `mailprime serve` processes: "one line per
SMTP session and per delivery attempt (queue id, client or remote host, sender, recipient,
result, remote reply, timings), plain text by default and JSON on request; passwords and message
bodies never logged".

One scenario, run once for the module on two servers side by side:

* "text": no `[log]` section at all (the default: text on standard error, captured to a file),
  at level DEBUG (`MAILPRIME_LOG_LEVEL`) so that the secrecy check covers the chattiest output;
* "json": `[log] format = "json"`, `file = "<tmp>/mail.log"`.

Against each: three submission sessions over STARTTLS — AUTH PLAIN then a message (with a body
marker) to a remote that accepts (node B, a real mailprime in this process, MX of b.test) and to
one that refuses connections (down.test, deferred); AUTH LOGIN and QUIT; AUTH PLAIN with a wrong
password. The passwords and the marker are random per run. Then the servers are stopped with
SIGTERM and every byte they wrote is examined.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import tomli_w
import trustme

from mailprime.config import load_settings
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Provisioning,
    free_port,
    provision,
    running_instance,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts servers or runs the real command

ALICE = "alice@a.test"
BOB = "bob@b.test"
DOWN = "someone@down.test"
FORMATS = ("text", "json")
DEADLINE = 30.0
LEVELS = {"debug", "info", "warning", "error", "critical"}


@dataclass(frozen=True)
class Record:
    """One log line taken apart: the logger, the id it is about (queue or session id) and its
    key=value fields (as text, whatever the format)."""

    logger: str
    id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Session:
    port: int  # the client's own port: the server logs client=[127.0.0.1]:PORT
    user: str | None  # the authenticated user, None when AUTH failed
    messages: int


@dataclass
class Secrets:
    password: str = field(default_factory=lambda: f"Pw-{secrets.token_hex(8)}")
    wrong_password: str = field(default_factory=lambda: f"Wrong-{secrets.token_hex(8)}")
    marker: str = field(default_factory=lambda: f"BODY-MARKER-{secrets.token_hex(8)}")

    def forbidden(self) -> dict[str, str]:
        """Every form in which a secret could leak: plain, and as the SASL exchanges carry it
        (AUTH PLAIN's base64 of authzid NUL authcid NUL password, AUTH LOGIN's base64 of the
        password alone)."""
        found = {"password": self.password, "wrong password": self.wrong_password,
                 "body marker": self.marker}
        for name, pw in (("password", self.password), ("wrong password", self.wrong_password)):
            plain = base64.b64encode(f"\0{ALICE}\0{pw}".encode()).decode()
            found[f"AUTH PLAIN blob of the {name}"] = plain.rstrip("=")
            found[f"AUTH LOGIN response of the {name}"] = base64.b64encode(pw.encode()).decode()
        return found


@dataclass
class Run:
    """What one server wrote, and what the clients did to it."""

    fmt: str
    log: Path  # the log stream: a [log] file, or standard error when no file is set
    outputs: list[Path]  # everything the process wrote (the log, standard output and error)
    sessions: list[Session]
    queue_id: str
    exit_code: int
    secrets: Secrets

    @property
    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    @property
    def records(self) -> list[Record]:
        return parse_records(self.fmt, self.log.read_text(encoding="utf-8"))

    def attempts(self) -> list[Record]:
        """The delivery attempt lines of the submitted message: one per recipient and try."""
        return [r for r in self.records
                if r.logger == "mailprime.delivery" and r.id == self.queue_id and "to" in r.fields]


# Parsing both formats -----------------------------------------------------------------------

TEXT_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) (?P<logger>mailprime(?:\.\w+)*)"
                       r"\[(?P<pid>\d+)\]: (?P<message>\S.*)$")
TEXT_PREFIX = re.compile(r"^(?P<id>[^\s:]+): (?P<body>.*)$")
# key=value, where a value holding a space, comma, '=' or '"' is quoted with \\ and \" escaped.
TEXT_FIELD = re.compile(r'(?P<key>\w+)=(?P<value>"(?:[^"\\]|\\.)*"|[^ ,="]*)(?:, |$)')


def _text_fields(body: str) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = TEXT_FIELD.match(body, pos)
        if m is None or m.end() == pos:
            return None  # not a key=value line (e.g. "listening: name=mx, ..." is; a banner not)
        value = m["value"]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[m["key"]] = value
        pos = m.end()
    return fields


def parse_records(fmt: str, text: str) -> list[Record]:
    records = []
    for line in text.splitlines():
        if fmt == "json":
            doc = json.loads(line)
            rest = {k: v for k, v in doc.items() if k not in ("time", "level", "logger", "id")}
            records.append(Record(doc["logger"], str(doc.get("id", "")),
                                  {k: str(v) for k, v in rest.items()}))
            continue
        m = TEXT_LINE.match(line)
        prefixed = TEXT_PREFIX.match(m["message"]) if m else None
        if m is None or prefixed is None:
            continue
        fields = _text_fields(prefixed["body"])
        if fields is not None:
            records.append(Record(m["logger"], prefixed["id"], fields))
    return records


# The scenario -------------------------------------------------------------------------------

def _write_config(root: Path, ca: trustme.CA, *, fmt: str, dns: str, mx_port: int) -> Path:
    root.mkdir(parents=True)
    cert = ca.issue_cert("mail.a.test", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    doc: dict[str, object] = {
        "server": {"hostname": "mail.a.test", "data_dir": "."},
        "listeners": [{"name": "submission", "role": "submission", "address": "127.0.0.1",
                       "port": free_port(), "tls": "starttls"}],
        "tls": {"cert": str(root / "cert.pem"), "key": str(root / "key.pem")},
        "dns": {"nameservers": [dns], "timeout": 2.0},
        # retry_first=60: the deferred recipient is tried once while the test runs.
        "delivery": {"mx_port": mx_port, "retry_first": 60, "retry_max_interval": 60,
                     "poll_interval": 0.2, "connect_timeout": 3.0},
    }
    if fmt == "json":
        doc["log"] = {"format": "json", "file": str(root / "mail.log")}
    config = root / "mailprime.toml"
    config.write_text(tomli_w.dumps(doc))
    return config


def _session(port: int, ctx: ssl.SSLContext, user: str, password: str, *, mechanism: str,
             message: bytes | None) -> tuple[Session, str]:
    """Blocking: one submission session over STARTTLS; returns it and the reply to the message
    ("" when none was sent)."""
    reply = ""
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as client:
        assert client.sock is not None
        local_port = int(client.sock.getsockname()[1])
        client.ehlo("client.test")
        client.starttls(context=ctx)
        client.ehlo("client.test")
        client.user, client.password = user, password
        authobject = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        try:
            client.auth(mechanism, authobject)
        except smtplib.SMTPAuthenticationError:
            return Session(local_port, None, 0), ""
        if message is not None:
            client.mail(user)
            for rcpt in (BOB, DOWN):
                code, _ = client.rcpt(rcpt)
                assert code == 250, (rcpt, code)
            code, resp = client.data(message)
            assert code == 250, resp
            reply = resp.decode()
    return Session(local_port, user, 1 if message is not None else 0), reply


async def _wait_records(run_fmt: str, log: Path, proc: subprocess.Popen[bytes], what: str,
                        count: int, pick: Callable[[Record], bool]) -> None:
    """Waits until the log holds `count` records for which `pick(record)` is true: an outcome
    the server produces on its own (a delivery, a session's end), hence polled with a deadline."""

    async def enough() -> bool | None:
        assert proc.poll() is None, f"serve exited with {proc.returncode}: {_tail(log)}"
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        return True if sum(1 for r in parse_records(run_fmt, text) if pick(r)) >= count else None

    await wait_for(enough, DEADLINE, f"{what} in {log}: {_tail(log)}")


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-3000:] if path.exists() else ""


async def _exercise(root: Path, fmt: str, config: Path, ca: trustme.CA, s: Secrets) -> Run:
    port = load_settings(config, environ={}).listeners[0].port
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPRIME_")}
    if fmt == "text":
        env["MAILPRIME_LOG_LEVEL"] = "DEBUG"
    stdout, stderr = root / "serve.out", root / "serve.err"
    log = root / "mail.log" if fmt == "json" else stderr
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailprime", "serve", "--config",
                                 str(config)], cwd=root, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
    try:
        ready = root / "run" / "ready.json"

        async def started() -> bool | None:
            assert proc.poll() is None, f"serve exited with {proc.returncode}: {_tail(stderr)}"
            return True if ready.exists() else None

        await wait_for(started, DEADLINE, f"{ready}")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        body = (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: log test\r\n\r\n"
                f"Hello, this line holds the marker {s.marker} and must not be logged.\r\n")
        first, reply = await asyncio.to_thread(_session, port, ctx, ALICE, s.password,
                                               mechanism="PLAIN", message=body.encode())
        queue_id = reply.split("queued as ", 1)[1].split()[0]
        second, _ = await asyncio.to_thread(_session, port, ctx, ALICE, s.password,
                                            mechanism="LOGIN", message=None)
        third, _ = await asyncio.to_thread(_session, port, ctx, ALICE, s.wrong_password,
                                           mechanism="PLAIN", message=None)
        assert (first.user, second.user, third.user) == (ALICE, ALICE, None)

        # Both recipients tried once (B accepts, down.test refuses), all three sessions over.
        await _wait_records(fmt, log, proc, "two delivery attempts", 2,
                            lambda r: r.id == queue_id and "to" in r.fields)
        await _wait_records(fmt, log, proc, "three disconnect lines", 3,
                            lambda r: r.fields.get("status") == "disconnect")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outputs = [p for p in {log, stdout, stderr} if p.exists()]
    return Run(fmt, log, outputs, [first, second, third], queue_id, code, s)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> dict[str, Run]:
    tmp = tmp_path_factory.mktemp("logs")
    s = Secrets()

    async def scenario(dns: DnsTestServer) -> dict[str, Run]:
        dns.zone.add_mx("b.test", 10, "mx.b.test")
        dns.zone.add_a("mx.b.test", "127.0.0.1")
        # down.test's MX is 127.0.0.2, where nothing listens on B's port: connection refused.
        dns.zone.add_mx("down.test", 10, "mx.down.test")
        dns.zone.add_a("mx.down.test", "127.0.0.2")
        async with running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                                    accounts={BOB: "bob-secret"}) as b:
            configs = {}
            # One after the other: two open_store calls at once in one process break each
            # other's migrations (Alembic's migration context is process-global).
            for fmt in FORMATS:
                configs[fmt] = _write_config(tmp / fmt, ca, fmt=fmt, dns=dns.address,
                                             mx_port=b.port("mx"))
                await provision(load_settings(configs[fmt], environ={}),
                                Provisioning("a.test", {ALICE: s.password}))
            # The two servers run side by side (each is a process of its own).
            done = await asyncio.gather(*(_exercise(tmp / fmt, fmt, configs[fmt], ca, s)
                                          for fmt in FORMATS))
            # The control: the marker did go through the servers (B filed both messages).
            delivered = await b.wait_mailbox(BOB, len(FORMATS))
            assert all(s.marker.encode() in content for _, content in delivered)
        return {r.fmt: r for r in done}

    with DnsTestServer() as dns:
        return asyncio.run(scenario(dns))


@pytest.fixture(params=FORMATS)
def run(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Run:
    return runs[request.param]


# The promises -------------------------------------------------------------------------------

def test_server_stops_cleanly(run: Run) -> None:
    assert run.exit_code == 0, _tail(run.log)


def test_every_line_is_one_well_formed_record(run: Run) -> None:
    lines = run.lines
    assert lines
    for line in lines:
        if run.fmt == "text":
            # Also catches a traceback spilling over several lines.
            assert TEXT_LINE.match(line), f"not a log line: {line!r}"
            continue
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        assert datetime.fromisoformat(doc["time"]).utcoffset() is not None, line
        assert doc["level"] in LEVELS, line
        assert str(doc["logger"]).startswith("mailprime"), line


def test_text_is_the_default_and_goes_to_standard_error(runs: dict[str, Run]) -> None:
    text = runs["text"]
    assert text.log.name == "serve.err"
    assert any(r.fields.get("status") == "disconnect" for r in text.records)


def test_one_disconnect_line_per_session(run: Run) -> None:
    ends = [r for r in run.records if r.fields.get("status") == "disconnect"]
    assert len(ends) == len(run.sessions), ends
    by_client = {r.fields.get("client"): r for r in ends}
    for session in run.sessions:
        line = by_client[f"[127.0.0.1]:{session.port}"]
        assert line.logger == "mailprime.smtpd"
        assert line.fields["listener"] == "submission"
        assert line.fields["helo"] == "client.test"
        assert line.fields["tls"] == "yes"
        assert line.fields.get("sasl_username") == session.user  # absent when AUTH failed
        assert line.fields["messages"] == str(session.messages)
        assert 0 <= float(line.fields["duration_s"]) < DEADLINE
    # The session id is the line's own: distinct per session, never a queue id.
    assert len({r.id for r in ends}) == len(ends) and run.queue_id not in {r.id for r in ends}


def test_login_lines_name_the_user_and_the_result(run: Run) -> None:
    logins = [r for r in run.records if "sasl_method" in r.fields]
    assert [(r.fields["sasl_method"], r.fields["sasl_username"], r.fields["result"])
            for r in logins] == [("PLAIN", ALICE, "ok"), ("LOGIN", ALICE, "ok"),
                                 ("PLAIN", ALICE, "failed")]


def test_acceptance_line_names_client_sender_and_recipients(run: Run) -> None:
    (accepted,) = [r for r in run.records if r.fields.get("status") == "accepted"]
    assert accepted.id == run.queue_id
    assert accepted.fields["client"] == f"[127.0.0.1]:{run.sessions[0].port}"
    assert accepted.fields["from"] == f"<{ALICE}>"
    assert accepted.fields["sasl_username"] == ALICE
    assert (accepted.fields["nrcpt"], accepted.fields["remote"]) == ("2", "2")
    assert float(accepted.fields["commit_ms"]) >= 0


def test_one_line_per_delivery_attempt(run: Run) -> None:
    attempts = {r.fields["to"]: r for r in run.attempts()}
    assert len(run.attempts()) == 2 and set(attempts) == {f"<{BOB}>", f"<{DOWN}>"}

    delivered = attempts[f"<{BOB}>"].fields
    assert delivered["status"] == "delivered"
    assert delivered["relay"].startswith("mx.b.test[127.0.0.1]:")
    assert delivered["reply"].startswith("250 2.0.0 ")  # B's own reply, with B's queue id
    assert delivered["attempts"] == "1"

    deferred = attempts[f"<{DOWN}>"].fields
    assert deferred["status"] == "deferred"
    assert deferred["relay"] == "none"  # no server was reached
    assert deferred["reply"].startswith("451 4.4.1 connect to mx.down.test[127.0.0.2]:")
    assert deferred["attempts"] == "1"
    # And the failed connection itself, naming the host that refused.
    refused = [r for r in run.records if r.id == run.queue_id
               and r.fields.get("status") == "connect-failed"]
    assert [r.fields["relay"].split("]:")[0] for r in refused] == ["mx.down.test[127.0.0.2"]


def test_delivery_attempt_lines_carry_a_timing(run: Run) -> None:
    timing = re.compile(r"delay|duration|elapsed|_ms$|_s$")
    for attempt in run.attempts():
        assert any(timing.search(key) for key in attempt.fields), attempt.fields


def test_the_forbidden_forms_are_what_the_client_sends() -> None:
    """The control for the secrecy check: the AUTH blobs it looks for are byte for byte what
    smtplib puts on the wire (base64 without line breaks, RFC 4954 4)."""
    s = Secrets()
    client = smtplib.SMTP()  # not connected: only its SASL encoders are used
    client.user, client.password = ALICE, s.password
    forbidden = s.forbidden()
    wire_plain = base64.b64encode(client.auth_plain().encode()).decode()
    assert wire_plain.startswith(forbidden["AUTH PLAIN blob of the password"])
    assert base64.b64decode(forbidden["AUTH LOGIN response of the password"]) == s.password.encode()


def test_no_password_or_body_is_ever_logged(run: Run) -> None:
    assert run.outputs and run.log in run.outputs
    for path in run.outputs:
        # Compared case-blind: a secret re-cased (or hex-dumped in upper case) still counts.
        data = path.read_bytes().lower()
        for what, value in run.secrets.forbidden().items():
            assert value.lower().encode() not in data, f"{what} found in {path}"
