"""Makes the real bounce samples in this directory: `python -m tests.message.bounces.generate`.

Needs root. Postfix comes from Debian's postfix package (scripts/install-peers.sh installs it);
Exim from Debian's exim4-daemon-light, which cannot be installed beside Postfix (both are the
system's MTA), so the script fetches the .debs with `apt-get download` and unpacks them into a
temporary directory, never installing them. See README.md for what each sample shows.

Theory of operation. A `RejectingSink` (sink.py) plays every recipient's MX on 127.0.0.1 and
answers each scenario's recipient with its scripted refusal (scenarios.py). For each MTA:

- Postfix: a private instance (tests/support/postfix.py, relay mode) relays to the sink; one
  message per scenario is submitted over SMTP; Postfix's bounce to the sender also goes through
  the sink, which records it. `maximal_queue_lifetime = 0` makes a temporary refusal final at
  once, as if the queue lifetime had run out.
- Exim: the unpacked binary runs with a private configuration (-C) in a private mount namespace
  where /etc/passwd names the Debian-exim user it was built for; `exim -odf` delivers each
  message in the foreground through a manualroute router to the sink, and Exim's bounce goes
  the same way. With no retry rules, Exim fails a temporarily refused address at once.

Every bounce is matched to its scenario by the Subject of the returned message and written as
`<mta>-<scenario>.eml`, exactly the octets the sink received (CRLF line ends).
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from tests.message.bounces.scenarios import SCENARIOS, SENDER
from tests.message.bounces.sink import Received, RejectingSink
from tests.support.postfix import PostfixInstance, free_port, postfix_unavailable

HERE = Path(__file__).resolve().parent
DEADLINE = 60.0
LIBDIR = "usr/lib/x86_64-linux-gnu"
EXIM_DEBS = ("exim4-daemon-light", "exim4-base", "exim4-config", "libidn12")
# Scenarios that make a multi-recipient message: one bounce naming two failed recipients.
MULTI = ("user-unknown", "mailbox-full")


def original(scenario_names: Sequence[str], recipients: Sequence[str]) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Origin News <{SENDER}>"
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "sample " + "+".join(scenario_names)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="origin.test")
    msg["X-Mailprime-Recipient"] = recipients[0]
    msg.set_content("Hello,\n\nthis message is made to be refused.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def scenario_of(bounce: Received) -> str:
    for line in bounce.data.split(b"\r\n"):
        if line.startswith(b"Subject: sample "):
            return line[len(b"Subject: sample "):].decode()
    raise ValueError(f"no returned Subject in bounce:\n{bounce.data[:2000]!r}")


def sample_name(mta: str, bounce: Received) -> str:
    return f"{mta}-{scenario_of(bounce).replace('+', '-and-')}.eml"


def write(out: Path, mta: str, bounces: Sequence[Received]) -> None:
    for bounce in bounces:
        path = out / sample_name(mta, bounce)
        path.write_bytes(bounce.data)
        print(f"wrote {path}")


Job = tuple[list[str], list[str]]  # scenario names, recipients of one message


def jobs() -> list[Job]:
    single = [([s.name], [s.recipient]) for s in SCENARIOS]
    by_name = {s.name: s for s in SCENARIOS}
    return [*single, (list(MULTI), [by_name[n].recipient for n in MULTI])]


# Postfix ------------------------------------------------------------------------------------------

def postfix_bounces(tmp: Path, todo: Sequence[Job]) -> list[Received]:
    """The bounces a private Postfix sends back for `todo`, in arrival order."""
    if reason := postfix_unavailable():
        raise RuntimeError(f"postfix: {reason}")
    with RejectingSink({s.recipient.partition("@")[0]: s.rule for s in SCENARIOS}) as sink:
        pf = PostfixInstance(tmp, smtpd_port=free_port(), mydomain="origin.test", mode="relay",
                             relay_to=("127.0.0.1", sink.port), myhostname="mta.origin.test",
                             main_cf={"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0"})
        with pf:
            for names, recipients in todo:
                with smtplib.SMTP(*pf.address, timeout=30) as client:
                    client.sendmail(SENDER, recipients, original(names, recipients))
            return sink.wait_for_bounces(len(todo), DEADLINE)


def make_postfix(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write(out, "postfix", postfix_bounces(Path(tmp), jobs()))


# Exim ---------------------------------------------------------------------------------------------

EXIM_CONF = """\
primary_hostname = mta.origin.test
qualify_domain = origin.test
spool_directory = {spool}
log_file_path = {spool}/log/%slog
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
trusted_users = root
deliver_drop_privilege = false
keep_environment =
acl_smtp_rcpt = accept
bounce_return_body = true
delay_warning = 0s

begin routers
to_sink:
  driver = manualroute
  domains = *
  transport = remote_smtp
  route_list = * 127.0.0.1 byname
  self = send

begin transports
remote_smtp:
  driver = smtp
  port = {port}
  hosts_try_fastopen =
  allow_localhost

begin retry
# none: a temporary refusal fails the address at once ("retry timeout exceeded")

begin rewrite
"""


def unpack_exim(work: Path) -> None:
    """The Debian packages fetched and unpacked under work/root."""
    debs = work / "debs"
    debs.mkdir()
    subprocess.run(["apt-get", "download", *EXIM_DEBS], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    root = work / "root"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=120)


def make_exim(out: Path) -> None:
    if os.geteuid() != 0:
        sys.exit("exim: needs root (a private mount namespace and a spool owned by Debian-exim)")
    with RejectingSink({s.recipient.partition("@")[0]: s.rule for s in SCENARIOS}) as sink, \
            tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        unpack_exim(work)
        spool = work / "spool"
        (spool / "log").mkdir(parents=True)
        conf = work / "exim.conf"
        conf.write_text(EXIM_CONF.format(spool=spool, port=sink.port))
        # The binary was built for the Debian-exim user, which only the exim4-base package
        # creates: add it to copies of passwd/group bind-mounted in a private namespace.
        for name, line in (("passwd", "Debian-exim:x:64999:64999::/nonexistent:/usr/sbin/nologin"),
                           ("group", "Debian-exim:x:64999:")):
            (work / name).write_text(Path("/etc", name).read_text() + line + "\n")
        subprocess.run(["chown", "-R", "64999:64999", str(spool)], check=True)
        todo = jobs()
        for names, recipients in todo:
            # Exim re-executes itself by its built-in path, /usr/sbin/exim4, with an emptied
            # environment: overlay the unpacked binary and library onto the system's directories.
            script = (f"mount --bind {work}/passwd /etc/passwd && mount --bind {work}/group /etc/group"
                      f" && mount -t overlay overlay -o lowerdir={work}/root/usr/sbin:/usr/sbin /usr/sbin"
                      f" && mount -t overlay overlay -o lowerdir={work}/root/{LIBDIR}:/{LIBDIR} /{LIBDIR}"
                      f' && exec /usr/sbin/exim4 -C {conf} -odf -oi -f {SENDER} "$@"')
            subprocess.run(["unshare", "-m", "sh", "-c", script, "exim", *recipients],
                           input=original(names, recipients).replace(b"\r\n", b"\n"),
                           check=False, timeout=60)
        bounces = sink.wait_for_bounces(len(todo), DEADLINE)
        write(out, "exim", bounces)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    makers = {"postfix": make_postfix, "exim": make_exim}
    parser.add_argument("mta", nargs="*", help="postfix and/or exim (default: both)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if not shutil.which("unshare"):
        sys.exit("unshare(1) is needed")
    chosen = args.mta or list(makers)
    if unknown := set(chosen) - set(makers):
        parser.error(f"unknown MTA {', '.join(sorted(unknown))}: choose from {', '.join(makers)}")
    for mta in chosen:
        makers[mta](args.out)


if __name__ == "__main__":
    main()
