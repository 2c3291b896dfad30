"""`python -m bench`: run the benchmark cases and print one table of rates and ratios.

Each case runs its peer (Postfix) and mailprime in this invocation, on this machine, with the same
load from smtp-source; the ratio is mailprime's rate over the peer's (above 1: mailprime is faster).
A half that cannot run says why in its column instead of failing the whole report.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.postfix import postfix_unavailable

from bench.mailprime_side import mailprime_accept, mailprime_relay
from bench.postfix_peer import postfix_accept, postfix_relay
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


def ratio(peer: Outcome, ours: Outcome) -> str:
    if peer.measurement and ours.measurement:
        return f"{ours.measurement.rate / peer.measurement.rate:.2f}x"
    return "-"


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
    p.add_argument("--case", action="append", choices=[c.key for c in CASES],
                   help="run only this case (repeatable); default: all")
    args = p.parse_args(argv)
    for name in ("messages", "sessions", "size", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = Load(messages=args.messages, sessions=args.sessions, size=args.size)
    cases = [c for c in CASES if not args.case or c.key in args.case]
    unavailable = postfix_unavailable()
    workdir: Path | None = args.workdir
    fstype = filesystem_of(workdir or Path(tempfile.gettempdir()))
    print(f"mailprime bench: {load.messages} messages x {load.size} B, {load.sessions} sessions,"
          f" median of {args.repeat};"
          f" {os.cpu_count()} cores, Python {platform.python_version()},"
          f" Postfix {postfix_version()}, queues on {fstype}")
    if fstype in ("tmpfs", "ramfs"):
        print("warning: fsync is free on a RAM filesystem; durable-accept figures mean little",
              file=sys.stderr)
    rows = [["case", "peer", "peer rate", "mailprime rate", "ratio"]]
    notes: list[str] = []
    failed = False
    for case in cases:
        print(f"running {case.name} ...", file=sys.stderr, flush=True)
        peer = run_half(case.run_peer, load, repeat=args.repeat, unavailable=unavailable,
                        workdir=workdir)
        ours = run_half(case.run_mailprime, load, repeat=args.repeat, unavailable=None,
                        workdir=workdir)
        failed |= peer.reason.startswith("error")
        rows.append([case.name, case.peer, peer.cell(), ours.cell(), ratio(peer, ours)])
        for label, outcome in (("Postfix", peer), ("mailprime", ours)):
            if outcome.measurement:
                notes.append(detail(f"{case.name}, {label}", outcome))
    print(table(rows))
    if notes:
        print("\nrates count from the first connect until the last message is through"
              " (queue drained or counted by the sink):")
        print("\n".join(notes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
