"""`python -m bench`: run the benchmark cases and print one table of rates and ratios.

Each case runs its peer and mailprime in this invocation, on this machine, with the same load:
the SMTP cases against Postfix with smtp-source, the IMAP and POP3 cases against Dovecot (and
pymap for IMAP, where it installs) with bench.mailbox_load's client. The ratio is mailprime's rate
over the peer's (above 1: mailprime is faster). A half that cannot run says why in its column
instead of failing the whole report.

The mailbox cases start every server once (Dovecot, mailprime, pymap, each with the same corpus
and accounts), give each one untimed warm-up session per account, then interleave the runs:
for each case and repeat, one run per server, so all see the same machine conditions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postfix import postfix_unavailable

from bench.campaign_bench import CONTACTS as CAMPAIGN_CONTACTS
from bench.campaign_bench import notes as campaign_notes
from bench.campaign_bench import row as campaign_row
from bench.campaign_bench import run as campaign_run
from bench.campaign_render import report as render_report
from bench.campaign_render import run as render_run
from bench.dkim_bench import DKIM_CASES, MESSAGE_SIZE, DkimCase, Rate, mailprime_rate, openssl_rate
from bench.dkim_bench import SECONDS as DKIM_SECONDS
from bench.dovecot_peer import DovecotInstance, dovecot_unavailable, dovecot_version
from bench.mailbox_load import (
    Account,
    Corpus,
    MailboxLoad,
    MailboxMeasurement,
    Target,
    corpus,
    run_load,
    warm_up,
)
from bench.mailbox_side import mailprime_mailbox, warnings_logged
from bench.mailprime_side import mailprime_accept, mailprime_relay
from bench.postfix_peer import postfix_accept, postfix_relay
from bench.pymap_peer import PymapInstance, PymapUnavailable, ensure_pymap
from bench.smtp_source import Load, Measurement

Runner = Callable[[Path, Load], Measurement]

NOT_WIRED = "mailprime: not wired yet"


# -- mailprime hooks: the lead engineer wires mailprime in here ------------------------------------
def mailprime_accept_rate(workdir: Path, load: Load) -> Measurement:
    """mailprime's MX with durable storage (bench.mailprime_side)."""
    return mailprime_accept(workdir, load)


def mailprime_relay_rate(workdir: Path, load: Load) -> Measurement:
    """mailprime relaying into smtp-sink (bench.mailprime_side)."""
    return mailprime_relay(workdir, load)


# -- cases -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Case:
    key: str
    name: str
    peer: str
    run_peer: Runner
    run_mailprime: Runner


CASES: tuple[Case, ...] = (
    Case("accept", "SMTP accept (durable)", "Postfix smtpd -> discard", postfix_accept,
         mailprime_accept_rate),
    Case("relay", "relay to smtp-sink", "Postfix -> smtp-sink", postfix_relay, mailprime_relay_rate),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One half of a case: its runs (the median by rate is the figure), or why there are none."""

    runs: tuple[Measurement, ...] = ()
    reason: str = ""

    @property
    def measurement(self) -> Measurement | None:
        if not self.runs:
            return None
        return sorted(self.runs, key=lambda m: m.rate)[len(self.runs) // 2]

    def cell(self) -> str:
        m = self.measurement
        return f"{m.rate:,.0f} msg/s" if m else self.reason


def run_half(runner: Runner, load: Load, *, repeat: int, unavailable: str | None,
             workdir: Path | None) -> Outcome:
    if unavailable:
        return Outcome(reason=f"skipped: {unavailable}")
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="mailprime-bench-", dir=workdir) as tmp:
            os.chmod(tmp, 0o755)  # Postfix's unprivileged processes must reach the instance inside
            try:
                runs.append(runner(Path(tmp), load))
            except NotImplementedError as exc:
                return Outcome(reason=str(exc) or NOT_WIRED)
            except Exception as exc:  # one broken half must not hide the others' figures
                first = (str(exc).splitlines() or [""])[0][:120]
                return Outcome(reason=f"error: {type(exc).__name__}: {first}")
    return Outcome(tuple(runs))


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding path (from /proc/mounts; "?" when unknown)."""
    best, fstype = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype


def postfix_version() -> str:
    try:
        out = subprocess.run(["/usr/sbin/postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True, timeout=30, check=False)
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def detail(label: str, outcome: Outcome) -> str:
    m = outcome.measurement
    assert m is not None
    spread = ""
    if len(outcome.runs) > 1:
        rates = sorted(r.rate for r in outcome.runs)
        spread = f"; {len(rates)} runs, {rates[0]:,.0f}-{rates[-1]:,.0f} msg/s"
    return (f"  {label}: {m.messages} accepted in {m.accepted_s:.2f} s ({m.accept_rate:,.0f} msg/s),"
            f" all through at {m.done_s:.2f} s ({m.rate:,.0f} msg/s){spread}")


# -- mailbox cases (IMAP, POP3) ---------------------------------------------------------------------
MAILBOX_PASSWORD = "bench-mailbox-pass"
MAILBOX_ACCOUNTS = 8  # one per client of the largest case: concurrent clients are different users
MAILBOX_BUDGET = 10.0  # seconds a run may start sessions for: bounds a slow server's run
PYMAP_REPEAT = 1  # pymap runs ~100x slower than Dovecot: one run per case keeps the bench short
# pymap is warmed up with its first account only: its first session on an account is not slower
# than later ones (measured: 3.7 s and 3.6 s), and eight ~4 s sessions would add half a minute.
PYMAP_WARM_UP_ACCOUNTS = 1
# Both servers use a login cache, as the issue allows ("or both use an auth cache, as Dovecot's
# auth_cache does"): mailprime's LoginCache answers a repeated login without Argon2; Dovecot's
# auth_cache keeps the passdb answer but still verifies the hash on each login (measured), which
# is Dovecot's design, not the bench's choice (see docs/benchmarks.md).
DOVECOT_AUTH_CACHE = True


@dataclass(frozen=True, slots=True)
class MailboxCase:
    key: str
    name: str
    protocol: str  # "imap" or "pop3"
    clients: int
    sessions: int  # per run, all clients together (fewer if MAILBOX_BUDGET runs out)


MAILBOX_CASES: tuple[MailboxCase, ...] = (
    MailboxCase("imap1", "IMAP session, 1 client", "imap", 1, 80),
    MailboxCase("imap8", "IMAP session, 8 clients", "imap", 8, 160),
    MailboxCase("pop3-1", "POP3 session, 1 client", "pop3", 1, 24),
    MailboxCase("pop3-8", "POP3 session, 8 clients", "pop3", 8, 48),
)


@dataclass(slots=True)
class MailboxServer:
    """One server of the mailbox cases: where it listens per protocol, or why it does not."""

    label: str
    targets: dict[str, Target] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # protocol -> why there are no runs
    repeat: int | None = None  # None: as --repeat says
    warm_up_accounts: int | None = None  # None: every account
    errors_logged: Callable[[], list[str]] | None = None

    def target(self, protocol: str) -> Target | None:
        return None if protocol in self.reasons else self.targets.get(protocol)

    def fail(self, protocols: Sequence[str], reason: str) -> None:
        for protocol in protocols:
            self.reasons.setdefault(protocol, reason)


@dataclass(slots=True)
class MailboxOutcome:
    """One server in one mailbox case: its runs (the median by rate is the figure), or why none."""

    runs: list[MailboxMeasurement] = field(default_factory=list)
    reason: str = ""

    @property
    def measurement(self) -> MailboxMeasurement | None:
        if not self.runs:
            return None
        return sorted(self.runs, key=lambda m: m.rate)[len(self.runs) // 2]

    def cell(self) -> str:
        m = self.measurement
        return f"{session_rate(m.rate)} sessions/s" if m else self.reason


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def session_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def error_reason(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:120]
    return f"error: {type(exc).__name__}: {first}"


def start_mailbox_servers(stack: contextlib.ExitStack, root: Path, corpus_: Corpus,
                          protocols: Sequence[str]) -> list[MailboxServer]:
    """Dovecot, mailprime and (for IMAP) pymap, all serving the same corpus to the same accounts
    with the same password hash; a server that cannot start says why in its reasons."""
    from mailprime.services.passwords import hash_password  # noqa: PLC0415

    accounts = tuple(Account(f"bench{i}@bench.test", MAILBOX_PASSWORD)
                     for i in range(1, MAILBOX_ACCOUNTS + 1))
    password_hash = hash_password(MAILBOX_PASSWORD)

    dovecot = MailboxServer(f"Dovecot {dovecot_version()}")
    unavailable = dovecot_unavailable()
    if unavailable:
        dovecot.fail(protocols, f"skipped: {unavailable}")
    else:
        progress(f"starting {dovecot.label} (writing its Maildirs) ...")
        try:
            instance = stack.enter_context(DovecotInstance(
                root / "dovecot", accounts, password_hash, corpus_, auth_cache=DOVECOT_AUTH_CACHE))
            dovecot.targets = {"imap": instance.imap, "pop3": instance.pop3}
            dovecot.errors_logged = instance.errors_logged
        except Exception as exc:  # one broken server must not hide the others' figures
            progress(f"{dovecot.label} did not start: {exc}")
            dovecot.fail(protocols, error_reason(exc))

    ours = MailboxServer("mailprime")
    progress(f"starting mailprime (storing {corpus_.count} messages) ...")
    try:
        ours.targets = stack.enter_context(mailprime_mailbox(root / "mailprime", accounts,
                                                             password_hash, corpus_))
        ours.errors_logged = lambda: warnings_logged(root / "mailprime")
    except NotImplementedError as exc:
        ours.fail(protocols, str(exc) or NOT_WIRED)
    except Exception as exc:
        progress(f"mailprime did not start: {exc}")
        ours.fail(protocols, error_reason(exc))
    for protocol in protocols:
        if protocol not in ours.targets:
            ours.fail([protocol], f"{NOT_WIRED} (no {protocol.upper()} listener)")

    servers = [dovecot, ours]
    if "imap" in protocols:
        progress("pymap: installing into bench/out/pymap-venv if needed ...")
        try:
            pymap = MailboxServer(f"pymap {ensure_pymap()} (maildir)", repeat=PYMAP_REPEAT,
                                  warm_up_accounts=PYMAP_WARM_UP_ACCOUNTS)
        except PymapUnavailable as exc:
            print(f"pymap: skipped: {exc}", file=sys.stderr)
            pymap = MailboxServer("pymap", reasons={"imap": f"skipped: {exc}"})
        else:
            progress(f"starting {pymap.label} ...")
            try:
                instance_ = stack.enter_context(PymapInstance(root / "pymap", accounts,
                                                              password_hash, corpus_))
                pymap.targets = {"imap": instance_.imap}
            except Exception as exc:
                progress(f"{pymap.label} did not start: {exc}")
                pymap.fail(["imap"], error_reason(exc))
        servers.append(pymap)
    return servers


def run_mailbox_cases(cases: Sequence[MailboxCase], servers: Sequence[MailboxServer],
                      corpus_: Corpus, *, repeat: int, sessions: int | None
                      ) -> dict[tuple[str, str], MailboxOutcome]:
    """Warm up every server, then for each case and repeat one run per server (interleaved)."""
    protocols = sorted({c.protocol for c in cases})
    for server in servers:
        for protocol in protocols:
            target = server.target(protocol)
            if target is None:
                continue
            progress(f"warming up {server.label} {protocol.upper()} ...")
            accounts = target.accounts[:server.warm_up_accounts or len(target.accounts)]
            try:
                warm_up(dataclasses.replace(target, accounts=accounts), protocol, corpus_)
            except Exception as exc:
                server.fail([protocol], error_reason(exc))
    outcomes = {(c.key, s.label): MailboxOutcome() for c in cases for s in servers}
    for case in cases:
        progress(f"running {case.name} ...")
        load = MailboxLoad(case.protocol, case.clients, sessions or case.sessions,
                           budget=MAILBOX_BUDGET)
        for run in range(repeat):
            for server in servers:
                outcome = outcomes[(case.key, server.label)]
                target = server.target(case.protocol)
                if target is None or outcome.reason or run >= (server.repeat or repeat):
                    continue
                try:
                    outcome.runs.append(run_load(target, load, corpus_))
                except Exception as exc:
                    outcome.reason = error_reason(exc)
    for server in servers:
        for case in cases:
            outcome = outcomes[(case.key, server.label)]
            if not outcome.runs and not outcome.reason:
                outcome.reason = server.reasons.get(case.protocol, "-")
    return outcomes


def mailbox_detail(label: str, outcome: MailboxOutcome) -> str:
    m = outcome.measurement
    assert m is not None
    spread = ""
    if len(outcome.runs) > 1:
        rates = sorted(r.rate for r in outcome.runs)
        spread = f"; {len(rates)} runs, {session_rate(rates[0])}-{session_rate(rates[-1])} sessions/s"
    return (f"  {label}: {m.sessions} sessions in {m.seconds:.2f} s ({session_rate(m.rate)}"
            f" sessions/s), {m.messages:,} messages ({m.message_rate:,.0f} msg/s,"
            f" {m.octets / m.seconds / 1e6:,.1f} MB/s){spread}")


def mailbox_rows(cases: Sequence[MailboxCase], servers: Sequence[MailboxServer],
                 outcomes: dict[tuple[str, str], MailboxOutcome]) -> tuple[list[list[str]], list[str]]:
    ours_server = next(s for s in servers if s.label == "mailprime")
    rows: list[list[str]] = []
    notes: list[str] = []
    for case in cases:
        ours = outcomes[(case.key, ours_server.label)]
        for peer_server in servers:
            if peer_server is ours_server or case.protocol not in (
                    *peer_server.targets, *peer_server.reasons):
                continue
            peer = outcomes[(case.key, peer_server.label)]
            rows.append([case.name, peer_server.label, peer.cell(), ours.cell(),
                         ratio_of(peer.measurement, ours.measurement)])
        for server in servers:
            if (outcome := outcomes[(case.key, server.label)]).measurement:
                notes.append(mailbox_detail(f"{case.name}, {server.label}", outcome))
    return rows, notes


def ratio_of(peer: MailboxMeasurement | Measurement | None,
             ours: MailboxMeasurement | Measurement | None) -> str:
    if peer and ours:
        return f"{ours.rate / peer.rate:.2f}x"
    return "-"


# -- DKIM signing cases ----------------------------------------------------------------------------
def run_dkim(cases: Sequence[DkimCase], args: argparse.Namespace, rows: list[list[str]],
             notes: list[str]) -> bool:
    """DKIM signing of 10 KB messages on one core against `openssl speed` of the same algorithm,
    interleaved (one OpenSSL run, then one of ours, per repeat); medians. True if a half failed."""
    failed = False
    details: list[str] = []
    for case in cases:
        progress(f"running {case.name} ...")
        peer_runs: list[Rate] = []
        our_runs: list[Rate] = []
        reason = ""
        for _ in range(args.repeat):
            try:
                peer_runs.append(openssl_rate(case))
                our_runs.append(mailprime_rate(case.key_type))
            except Exception as exc:  # one broken case must not hide the others' figures
                reason, failed = error_reason(exc), True
                break
        peer = sorted(peer_runs, key=lambda r: r.rate)[len(peer_runs) // 2] if peer_runs else None
        ours = sorted(our_runs, key=lambda r: r.rate)[len(our_runs) // 2] if our_runs else None
        rows.append([case.name, case.peer, f"{peer.rate:,.0f} sign/s" if peer else reason or "-",
                     f"{ours.rate:,.0f} msg/s" if ours else reason or "-",
                     f"{ours.rate / peer.rate:.2f}x" if peer and ours else "-"])
        if ours and peer:
            spread = ", ".join(f"{r.rate:,.0f}" for r in sorted(our_runs, key=lambda r: r.rate))
            details.append(f"  {case.name}: {ours.count:,} messages of {MESSAGE_SIZE:,} B signed in"
                           f" {ours.seconds:.2f} s on one core (runs: {spread} msg/s);"
                           f" OpenSSL {peer.rate:,.0f} raw signatures/s")
    if details:
        notes.append(f"\nDKIM: DkimSigner.sign of a {MESSAGE_SIZE:,} B multipart message (relaxed/relaxed,"
                     f" one key) for {DKIM_SECONDS:.0f} s vs `openssl speed -seconds"
                     f" {DKIM_SECONDS:.0f}`, interleaved, median of {args.repeat}:")
        notes.extend(details)
    return failed


# -- campaign case ---------------------------------------------------------------------------------
def run_campaign(args: argparse.Namespace, rows: list[list[str]], notes: list[str]) -> bool:
    """One campaign run (seeding, dispatch and OpenSSL in child processes; bench.campaign_bench):
    one row and its notes; True if it failed, a wrong result (the checks on the queue) included."""
    progress(f"running the campaign case ({args.contacts:,} contacts) ...")
    try:
        result = campaign_run(args.contacts, args.workdir)
    except Exception as exc:  # one broken case must not hide the others' figures
        rows.append(["campaign, RSA-2048, queued", "openssl speed -multi 2 rsa2048", "-",
                     error_reason(exc), "-"])
        return True
    rows.append(campaign_row(result))
    notes.extend(campaign_notes(result))
    return False


# -- command line ----------------------------------------------------------------------------------
# Groups of cases for --case. Without --case only the SMTP cases run (what `python -m bench` has
# always done, and what callers passing SMTP options expect); `make bench` passes --case all.
GROUPS = {"smtp": [c.key for c in CASES], "mailbox": [c.key for c in MAILBOX_CASES],
          "dkim": [c.key for c in DKIM_CASES]}
# The campaign case (bench.campaign_bench): 100,000 recipients queued, against OpenSSL's rate.
GROUPS["campaign"] = ["campaign"]
GROUPS["all"] = GROUPS["smtp"] + GROUPS["mailbox"] + GROUPS["dkim"] + GROUPS["campaign"]
# Not in "all" yet: a micro-benchmark without a peer (issue 5's campaign case will have one).
GROUPS["render"] = ["render"]
DEFAULT_GROUP = "smtp"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default = Load()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=default.messages, help="messages per run")
    p.add_argument("--sessions", type=int, default=default.sessions, help="parallel SMTP sessions")
    p.add_argument("--size", type=int, default=default.size, help="payload bytes per message")
    p.add_argument("--repeat", type=int, default=3, help="runs per half; the median is reported")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where instances keep queues and mail (default: the system temp dir);"
                        " put it on the disk under test, not on tmpfs")
    p.add_argument("--case", action="append", choices=[*GROUPS["all"], *GROUPS],
                   help="run this case or group of cases (repeatable): smtp (the default),"
                        " mailbox (IMAP and POP3), dkim (DKIM signing), campaign (a campaign"
                        " to --contacts recipients against openssl -multi 2), all")
    p.add_argument("--contacts", type=int,
                   default=int(os.environ.get("BENCH_CONTACTS", CAMPAIGN_CONTACTS)),
                   help="recipients of the campaign case (default 100000; env BENCH_CONTACTS)")
    p.add_argument("--mailbox-messages", type=int, default=1000,
                   help="messages in each account's INBOX for the IMAP and POP3 cases")
    p.add_argument("--mailbox-sessions", type=int, default=None,
                   help="sessions per IMAP/POP3 run (default: per case, 24-160)")
    args = p.parse_args(argv)
    for name in ("messages", "sessions", "size", "repeat", "mailbox_messages", "contacts"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.mailbox_sessions is not None and args.mailbox_sessions < 1:
        p.error("--mailbox-sessions must be at least 1")
    return args


def run_smtp_cases(cases: Sequence[Case], load: Load, args: argparse.Namespace,
                   rows: list[list[str]], notes: list[str]) -> bool:
    """The SMTP cases against Postfix; appends table rows and notes; True if a peer failed."""
    unavailable = postfix_unavailable()
    details: list[str] = []
    failed = False
    for case in cases:
        print(f"running {case.name} ...", file=sys.stderr, flush=True)
        peer = run_half(case.run_peer, load, repeat=args.repeat, unavailable=unavailable,
                        workdir=args.workdir)
        ours = run_half(case.run_mailprime, load, repeat=args.repeat, unavailable=None,
                        workdir=args.workdir)
        failed |= peer.reason.startswith("error")
        rows.append([case.name, case.peer, peer.cell(), ours.cell(),
                     ratio_of(peer.measurement, ours.measurement)])
        for label, outcome in (("Postfix", peer), ("mailprime", ours)):
            if outcome.measurement:
                details.append(detail(f"{case.name}, {label}", outcome))
    if details:
        notes.append("\nSMTP rates count from the first connect until the last message is"
                     " through (queue drained or counted by the sink):")
        notes.extend(details)
    return failed


def run_mailbox(cases: Sequence[MailboxCase], args: argparse.Namespace,
                rows: list[list[str]], notes: list[str]) -> bool:
    """The IMAP/POP3 cases; appends table rows and notes; True if Dovecot or mailprime failed
    (a wrong answer included), not when a half is only unavailable."""
    corpus_ = corpus(args.mailbox_messages)
    protocols = sorted({c.protocol for c in cases})
    print(f"mailbox cases: {corpus_.count} messages ({corpus_.octets / 1e6:.1f} MB) in each of"
          f" {MAILBOX_ACCOUNTS} accounts' INBOX, client c logs in as account c; median of"
          f" {args.repeat} (pymap: {PYMAP_REPEAT}); a run stops starting sessions after"
          f" {MAILBOX_BUDGET:.0f} s")
    with tempfile.TemporaryDirectory(prefix="mailprime-bench-mailbox-", dir=args.workdir) as tmp, \
            contextlib.ExitStack() as stack:
        os.chmod(tmp, 0o755)  # Dovecot's unprivileged processes must reach the instance inside
        servers = start_mailbox_servers(stack, Path(tmp), corpus_, protocols)
        outcomes = run_mailbox_cases(cases, servers, corpus_, repeat=args.repeat,
                                     sessions=args.mailbox_sessions)
        for server in servers:
            for line in (server.errors_logged() if server.errors_logged else [])[:10]:
                print(f"{server.label} logged: {line}", file=sys.stderr)
    table_rows, details = mailbox_rows(cases, servers, outcomes)
    rows.extend(table_rows)
    if details:
        notes.append("\nIMAP/POP3 rates count from the first connect until the last session"
                     " logged out; messages = headers of all plus bodies fetched (IMAP) or"
                     " RETRs (POP3):")
        notes.extend(details)
    return any(o.reason.startswith("error") for (_, label), o in outcomes.items()
               if not label.startswith("pymap"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = Load(messages=args.messages, sessions=args.sessions, size=args.size)
    chosen = {key for name in args.case or [DEFAULT_GROUP] for key in GROUPS.get(name, [name])}
    cases = [c for c in CASES if c.key in chosen]
    mailbox_cases = [c for c in MAILBOX_CASES if c.key in chosen]
    dkim_cases = [c for c in DKIM_CASES if c.key in chosen]
    workdir: Path | None = args.workdir
    fstype = filesystem_of(workdir or Path(tempfile.gettempdir()))
    print(f"mailprime bench: {os.cpu_count()} cores, Python {platform.python_version()},"
          f" median of {args.repeat}, mail on {fstype}")
    if cases:
        print(f"SMTP cases: {load.messages} messages x {load.size} B, {load.sessions} sessions,"
              f" Postfix {postfix_version()}")
    if fstype in ("tmpfs", "ramfs"):
        print("warning: fsync is free on a RAM filesystem; durable-accept figures mean little",
              file=sys.stderr)
    rows = [["case", "peer", "peer rate", "mailprime rate", "ratio"]]
    notes: list[str] = []
    failed = run_smtp_cases(cases, load, args, rows, notes) if cases else False
    if mailbox_cases:
        failed |= run_mailbox(mailbox_cases, args, rows, notes)
    if dkim_cases:
        failed |= run_dkim(dkim_cases, args, rows, notes)
    if "campaign" in chosen:
        failed |= run_campaign(args, rows, notes)
    if len(rows) > 1:
        print(table(rows))
    if notes:
        print("\n".join(notes))
    if "render" in chosen:
        print(render_report(render_run()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
