"""`mailprime bounce classify FILE...`: what a bounce or complaint says, one JSON line per recipient.

For operators checking a sample: saved bounces (.eml, or an mbox holding one message) are read
with the same parsers the MX uses, so what this prints is what the event stream will record.

Exit status: 0 when every file named at least one recipient; 1 when some file is not a bounce
or complaint or names nobody; 2 when some file could not be read (the others are still read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailprime.message.arf import DEFAULT_RECIPIENT_HEADER, FeedbackReport, parse_arf
from mailprime.message.bounce_parse import FailedRecipient, parse_bounce

bounce_app = typer.Typer(help="Read bounces (DSNs and MTA notices) and complaints (ARF).",
                         no_args_is_help=True)

EXIT_OK, EXIT_NOTHING_FOUND, EXIT_UNREADABLE = 0, 1, 2


@bounce_app.command("classify")
def classify(
    files: Annotated[list[Path], typer.Argument(
        help="Bounce or complaint messages (.eml, or a one-message mbox); '-' reads standard input.",
        metavar="FILE")],
    recipient_header: Annotated[str, typer.Option(
        help="Header of our own messages that names their recipient: a complaint's last resort "
             "when the provider redacted the address.")] = DEFAULT_RECIPIENT_HEADER,
) -> None:
    """Print one JSON line per failed (or delayed) recipient of each bounce, and per complaining
    recipient of each ARF report: recipient, action, status, reason, hard/soft."""
    status = EXIT_OK
    for path in files:
        name = str(path)
        try:
            data = sys.stdin.buffer.read() if name == "-" else path.read_bytes()
        except OSError as exc:
            typer.echo(f"{name}: cannot read: {exc.strerror or exc}", err=True)
            status = EXIT_UNREADABLE
            continue
        found = _describe(name, _without_mbox_line(data), recipient_header)
        for line in found:
            typer.echo(json.dumps(line, ensure_ascii=False))
        if not any(line.get("recipient") for line in found):
            if not found:
                typer.echo(f"{name}: not a bounce or a complaint report", err=True)
            else:
                typer.echo(f"{name}: no recipient could be found in this report", err=True)
            status = max(status, EXIT_NOTHING_FOUND)
    raise typer.Exit(status)


Line = dict[str, str | bool | list[str] | None]


def _describe(name: str, data: bytes, recipient_header: str) -> list[Line]:
    report = parse_arf(data, recipient_header=recipient_header)
    if report is not None:
        return [_complaint_line(name, report, r) for r in report.recipients or (None,)]
    return [_bounce_line(name, r) for r in parse_bounce(data)]


def _bounce_line(name: str, r: FailedRecipient) -> Line:
    return {
        "file": name,
        "recipient": r.recipient,
        "action": r.action.value,
        "status": r.status,
        "reason": r.reason.value,
        "hard": r.hard,
        "diagnostic": r.diagnostic,
        "remote_mta": r.remote_mta,
    }


def _complaint_line(name: str, report: FeedbackReport, recipient: str | None) -> Line:
    return {
        "file": name,
        "recipient": recipient,
        "feedback_type": report.feedback_type,
        "recipient_source": report.recipient_source.value if report.recipient_source else None,
        "user_agent": report.user_agent,
        "source_ip": report.source_ip,
        "reported_domains": list(report.reported_domains),
        "original_mail_from": report.original_mail_from,
        "original_message_id": report.original_message_id,
        "arrival_date": report.arrival_date,
    }


def _without_mbox_line(data: bytes) -> bytes:
    """A message saved from an mbox starts with a "From sender date" line (no colon): drop it."""
    if data.startswith(b"From "):
        first, sep, rest = data.partition(b"\n")
        if sep and b":" not in first.split(b" ", 2)[1]:
            return rest
    return data
