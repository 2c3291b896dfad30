"""`mailprime tls-report [--day D] [--domain X] [--json]`: the TLS results of one UTC day.

What outbound delivery counted (delivery.tls_reports, RFC 8460): per policy domain, the sessions
that negotiated TLS as the domain's MTA-STS policy (or the lack of one) asked, and the failures by
result type and receiving MX. As a table for operators, or with --json as the RFC 8460 4.4 report
body per policy domain, one JSON object per line, ready to be sent to the domain's rua address
(sending is not done by mailprime yet).

Counts reach the database every `[mta_sts] report_flush_seconds` from each running process, so
the current day's figures may lag that much.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.delivery.tls_reports import SUCCESS, report_json
from mailprime.domain.deliverability import TlsResultKey
from mailprime.storage.ports import Store


def tls_report(
    config: ConfigOpt,
    day: Annotated[str, typer.Option(help="UTC day, YYYY-MM-DD; default: today.")] = "",
    domain: Annotated[str, typer.Option(help="Only this policy domain.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="RFC 8460 report bodies, one JSON "
                                          "object per line and policy domain.")] = False,
) -> None:
    """Print the TLS results of outbound sessions (RFC 8460) for one day."""
    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        fail(f"--day: expected YYYY-MM-DD, got {day!r}", 2)
    only = domain.strip().rstrip(".").lower()

    async def act(store: Store, settings: Settings) -> list[str]:
        rows = [(k, n) for k, n in await store.tls_results(when)
                if not only or k.policy_domain == only]
        if not as_json:
            _print_table(rows, when)
            return []
        out = []
        hostname = settings.server.hostname
        for name in sorted({k.policy_domain for k, _ in rows}):
            record = await store.get_mta_sts_policy(name)
            strings = [ln.strip() for ln in record.policy_text.splitlines() if ln.strip()] \
                if record is not None else []
            report = report_json(
                rows, day=when, policy_domain=name,
                organization=settings.mta_sts.report_organization or hostname,
                contact=settings.mta_sts.report_contact or f"postmaster@{hostname}",
                report_id=f"{when.isoformat()}.{name}@{hostname}", policy_strings=strings)
            out.append(json.dumps(report, ensure_ascii=False))
        return out

    for line in run_with_store(config, act):
        typer.echo(line)


def _print_table(rows: list[tuple[TlsResultKey, int]], when: date) -> None:
    if not rows:
        console.print(f"no TLS results recorded for {when.isoformat()}")
        return
    table = Table("policy domain", "policy", "result", "receiving MX", "sessions",
                  title=f"TLS results {when.isoformat()} (UTC)")
    for key, count in sorted(rows, key=lambda r: (r[0].policy_domain, r[0].policy_type,
                                                  r[0].result_type, r[0].receiving_mx)):
        # Names come from DNS and remote peers: escaped so Rich never reads them as markup.
        table.add_row(escape(key.policy_domain), key.policy_type,
                      "success" if key.result_type == SUCCESS else key.result_type,
                      escape(key.receiving_mx), str(count))
    console.print(table)
