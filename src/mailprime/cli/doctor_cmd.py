"""`mailprime doctor DOMAIN`: check the DNS and the server of a sending domain against what the
big mailbox providers require, and print what to publish.

The checks live in services.doctor; this module gathers their inputs from the configuration (the
sending addresses, the bounce domain, the certificate, the blocklists), wires the DNS resolver
and the HTTPS fetcher, and renders the findings: a table, then every fix unwrapped (zone-file
lines to paste), or one JSON document with --json.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, opened_store, settings_from
from mailprime.config import Settings
from mailprime.domain.address import normalize_domain
from mailprime.domain.clock import SystemClock
from mailprime.domain.errors import ConfigError, DomainError, InvalidAddress

# The checks, the resolver and the HTTPS client are imported where used: they load the Public
# Suffix List, dnspython and ssl (~90 ms), which `mailprime --help` and the other commands never
# need.
if TYPE_CHECKING:
    from mailprime.message.resolver import Resolver
    from mailprime.net.https_fetch import HttpsFetcher
    from mailprime.services.doctor import DoctorReport, DoctorRequest, PolicyFetcher

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}

SendingIpOpt = Annotated[list[str] | None, typer.Option(
    "--sending-ip", metavar="IP",
    help="A source address outbound mail leaves from (repeat for several). Default: the \\[shaping] "
         "IP pools when configured, else the A/AAAA addresses of \\[server] hostname.")]
BounceDomainOpt = Annotated[str | None, typer.Option(
    "--bounce-domain", metavar="DOMAIN",
    help="The envelope (Return-Path) domain bounces come back to. Default: the VERP domain of "
         "\\[bounces] when configured, else DOMAIN.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


def doctor(domain: Annotated[str, typer.Argument(help="The sending domain (the From address's).",
                                                metavar="DOMAIN")],
           config: ConfigOpt, sending_ip: SendingIpOpt = None, bounce_domain: BounceDomainOpt = None,
           as_json: JsonOpt = False) -> None:
    """Check SPF, DKIM, DMARC, reverse DNS, MX, MTA-STS, TLS-RPT, the TLS certificate and DNS
    blocklists for DOMAIN; print what is wrong and the exact record to publish.

    Exit status: 0 when nothing FAILs (WARN rows are allowed: they are recommendations),
    1 when some check FAILs, 2 on a usage or configuration error."""
    from mailprime.services.doctor import DoctorRequest  # noqa: PLC0415 (start-up time)

    name = _domain(domain, "DOMAIN")
    bounce = _domain(bounce_domain, "--bounce-domain") if bounce_domain else None
    ips = tuple(_ip(text) for text in sending_ip or ())
    settings = settings_from(config)
    request = DoctorRequest(
        domain=name, hostname=settings.server.hostname.lower(),
        bounce_domain=bounce or _verp_domain(settings) or name,
        sending_ips=ips or pool_addresses(settings), helo_name=settings.helo_name.lower(),
        blocklists=tuple(settings.doctor.blocklists), cert_path=settings.cert_path,
        now=SystemClock().now(), timeout=settings.dns.timeout,
        expiry_warning=timedelta(days=settings.doctor.cert_expiry_warning_days))
    try:
        report = asyncio.run(_run(settings, request))
    except ConfigError as exc:  # e.g. no [dns] nameservers and none in /etc/resolv.conf
        fail(exc.message, EXIT_USAGE)
    except DomainError as exc:
        fail(exc.message)
    if as_json:
        typer.echo(json.dumps(report_json(report, request), indent=2, ensure_ascii=False))
    else:
        _print(report, request)
    raise typer.Exit(EXIT_PASSED if report.passed else EXIT_FAILED)


async def _run(settings: Settings, request: DoctorRequest) -> DoctorReport:
    from mailprime.net.dns import DnsResolver  # noqa: PLC0415 (start-up time)
    from mailprime.services.doctor import run_doctor  # noqa: PLC0415

    resolver = DnsResolver(settings.dns.nameservers, settings.dns.timeout)
    async with opened_store(settings) as store:
        return await run_doctor(request, resolver, store, policy_fetcher(settings, resolver))


def _domain(text: str, what: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidAddress as exc:
        fail(f"{what} {text!r}: {exc.message}", EXIT_USAGE)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        fail(f"--sending-ip {text!r} is not an IPv4 or IPv6 address", EXIT_USAGE)


def _verp_domain(settings: Settings) -> str:
    """[bounces] verp_domain when VERP is on and it is set ("" means the sender's own domain)."""
    # Read with getattr: [bounces] and [shaping] grow with other work on the deliverability
    # issue, and the doctor must keep working on a configuration without these keys.
    if not getattr(settings.bounces, "verp", False):
        return ""
    domain = getattr(settings.bounces, "verp_domain", "")
    return domain.lower().rstrip(".") if isinstance(domain, str) else ""


def pool_addresses(settings: Settings) -> tuple[str, ...]:
    """The source addresses of the [shaping.pools.NAME] IP pools, in order, without repeats."""
    pools: Any = getattr(settings.shaping, "pools", None)
    found: list[str] = []
    for pool in pools.values() if isinstance(pools, dict) else ():
        addresses = getattr(pool, "addresses", ())
        found += [str(a) for a in addresses] if isinstance(addresses, list | tuple) else []
    return tuple(dict.fromkeys(found))


class HttpsPolicyFetcher:
    """The doctor's PolicyFetcher port over net.https_fetch (the client delivery uses too)."""

    def __init__(self, fetcher: HttpsFetcher) -> None:
        self.fetcher = fetcher

    async def fetch_policy(self, domain: str) -> str:
        from mailprime.net.https_fetch import HttpsFetchError  # noqa: PLC0415 (start-up time)
        from mailprime.services.doctor import PolicyFetchError  # noqa: PLC0415

        try:
            body = await self.fetcher.get(f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
        except HttpsFetchError as exc:
            raise PolicyFetchError(exc.reason) from None
        return body.decode("utf-8", errors="replace")


def policy_fetcher(settings: Settings, resolver: Resolver) -> PolicyFetcher:
    """A verifying HTTPS fetcher with the port and trust store of [mta_sts] (as delivery's)."""
    from mailprime.net.https_fetch import HttpsFetcher  # noqa: PLC0415 (start-up time)
    from mailprime.net.tls import client_context  # noqa: PLC0415
    port = getattr(settings.mta_sts, "https_port", 443)  # getattr: see _verp_domain
    cafile = getattr(settings.mta_sts, "ca_file", "")
    context = client_context(verify=True, cafile=cafile or None)
    return HttpsPolicyFetcher(HttpsFetcher(resolver, context, port=port, timeout=settings.dns.timeout))


# Rendering ---------------------------------------------------------------------------------------

def report_json(report: DoctorReport, request: DoctorRequest) -> dict[str, Any]:
    return {
        "domain": report.domain,
        "bounce_domain": request.bounce_domain,
        "hostname": request.hostname,
        "sending_ips": list(report.sending_ips),
        "passed": report.passed,
        "checks": [{"check": f.check, "subject": f.subject, "status": f.status.value,
                    "found": f.found, "fix": f.fix} for f in report.findings],
    }


def _print(report: DoctorReport, request: DoctorRequest) -> None:
    table = Table("check", "subject", "status", "found", title=(
        f"mailprime doctor {report.domain} (bounce domain {request.bounce_domain}, sending "
        f"{', '.join(report.sending_ips) or 'from no known address'})"))
    fixes: list[str] = []
    for number, finding in enumerate(report.findings, 1):
        found = escape(finding.found)
        if finding.fix:
            fixes.append(f"# [{number}] {finding.status.value} {finding.check} {finding.subject}\n"
                         f"{finding.fix}")
            found += f" (fix [{number}] below)"
        table.add_row(finding.check, escape(finding.subject),
                      f"[{_STYLE[finding.status.value]}]{finding.status.value}[/]", found)
    console.print(table)
    if fixes:
        console.print("To fix, publish or run:")
        for fix in fixes:
            typer.echo(fix)  # plain: never wrapped, so the records can be pasted as printed
    counts = {s: sum(f.status.value == s for f in report.findings) for s in _STYLE}
    verdict = "passed" if report.passed else "FAILED"
    console.print(f"{verdict}: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL")
