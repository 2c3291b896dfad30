"""`mailprime demo`: the whole marketing flow on one machine, in sandbox mode.

Theory of operation
-------------------
1. Where. Without --config, a data directory of its own (./var-demo, or --dir), made on first
   use by `mailprime init --sandbox` (the same function), its configuration then given https
   links and a postal address (campaigns refuse to start without them). With --config, that
   configuration, only if it is in sandbox mode: a demo must never mail real people. Links that
   are not https there are made https for this run only (nothing is written to the file).
2. What. A double opt-in list "demo" of --contacts sample contacts (deterministic: the n-th is
   always the same person; RFC 2606 reserved domains only), a few of them unconfirmed,
   unsubscribed or suppressed so that the gate has someone to leave out; DKIM keys for the
   From domain if it has none; a template with merge fields, the unsubscribe link and the
   postal address; a campaign "demo-N" (the first free N). A second run reuses the list and
   the template and sends a new campaign to the same people.
3. Send. The pre-flight is printed (an error stops here, before anything is sent), the
   campaign started, and the runtime started in this process without listeners (no port is
   taken, so a server may already run on the same data directory): its campaign runner
   dispatches and its worker "delivers" into the sandbox mailbox. A progress bar follows
   queued and delivered, read from the store, until the campaign is over and all it queued
   is delivered, or a deadline (then it says so: a running server finishes the job).
4. Show. The counts (sent, left out by reason, delivered into the sandbox), one captured
   message written out as a file, and where to look next.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tomli_w
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailprime.cli.context import console, err_console, fail, opened_store, settings_from
from mailprime.cli.init_cmd import init
from mailprime.config import Role, Settings, TlsMode
from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MailingList,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.campaigns import Campaign, CampaignDraft, CampaignStats, CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.domain.deliverability import GLOBAL_SCOPE, Suppression, SuppressionReason
from mailprime.domain.errors import DomainError
from mailprime.domain.templates import Template, TemplateFields
from mailprime.storage.ports import Store

if TYPE_CHECKING:
    from mailprime.marketing.preflight import Problem
    from mailprime.runtime import Server

# The marketing modules and the runtime are imported where used: `--help` needs none of them.

DEMO_DIR = Path("var-demo")
DEMO_DOMAIN = "example.test"  # what `make run` uses too (RFC 2606 reserved)
LIST_NAME = "demo"
TEMPLATE_NAME = "demo-newsletter"
POSTAL_ADDRESS = "mailprime demo, 1 Example Street, 12345 Springfield"
EXCLUDED_EACH = 3  # contacts unconfirmed, suppressed and unsubscribed, each
MIN_CONTACTS = 20
MAX_CONTACTS = 100_000
IMPORT_BATCH = 1000  # AudienceStore.upsert_contacts takes ~1,000 at a time
POLL_SECONDS = 0.25

# RFC 2606 reserves these for examples: no real person has an address there.
DOMAINS = ("example.com", "example.net", "example.org")
FIRST_NAMES = ("Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara",
               "Ken", "Radia", "Tim", "Frances", "Edsger", "Hedy", "Guido", "Joan", "Vint",
               "Sophie", "Donald", "Anita")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie",
              "Liskov", "Thompson", "Perlman", "Berners-Lee", "Allen", "Dijkstra", "Lamarr",
              "van Rossum", "Clarke", "Cerf", "Wilson", "Knuth", "Borg")
CITIES = ("Lisbon", "Oslo", "Lyon", "Porto", "Ghent", "Turin", "Bergen", "Krakow", "Seville",
          "Tartu", "Galway", "Brno")
PLANS = ("free", "pro", "team")

SUBJECT = "{{ attributes.first_name }}, what's new in {{ attributes.city }}"
HTML = """<html><head><style>p { font-family: sans-serif; color: #222 }</style></head><body>
<p>Hello {{ attributes.first_name }},</p>
<p>This is the mailprime demo newsletter for {{ attributes.plan }} plan members in
{{ attributes.city }}. Every contact on the list gets a copy of their own: their name, city
and plan merged in, DKIM-signed, with a one-click unsubscribe link that works for them alone.</p>
<p>Read <a href="https://www.DOMAIN/news">this month's news</a> or open
<a href="https://www.DOMAIN/account">your account</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> from {{ list.name }} &middot;
{{ postal_address }}</p>
</body></html>
"""
TEXT = """Hello {{ attributes.first_name }},

This is the mailprime demo newsletter for {{ attributes.plan }} plan members in
{{ attributes.city }}. Every contact on the list gets a copy of their own.

This month's news: https://www.DOMAIN/news

Unsubscribe: {{ unsubscribe_url }}
{{ postal_address }}
"""


def sample_contact(n: int) -> ContactInput:
    """The n-th sample contact: always the same one, and no two alike (n is in the address)."""
    first = FIRST_NAMES[n % len(FIRST_NAMES)]
    last = LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]
    local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
    return ContactInput(
        email=f"{local}.{n:05d}@{DOMAINS[n % len(DOMAINS)]}", name=f"{first} {last}",
        attributes={"first_name": first, "city": CITIES[(n * 7) % len(CITIES)],
                    "plan": PLANS[(n // 3) % len(PLANS)], "signup_year": 2015 + n % 10})


@dataclass(frozen=True)
class Started:
    campaign: Campaign
    mailing_list: MailingList
    audience: int  # contacts the campaign will send to
    left_out: dict[str, int]  # why the other members get nothing -> how many


@dataclass(frozen=True)
class Outcome:
    started: Started
    status: CampaignStatus
    stats: CampaignStats
    finished: bool  # over, and everything it queued delivered
    sample: Path | None  # one captured message, written out
    mailbox: str  # the sandbox capture mailbox's address


def demo(
    dir_: Annotated[Path | None, typer.Option(
        "--dir", help="The demo's data directory, made on first use (var-demo by default).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Use this configuration instead; it must be in sandbox mode.")
        ] = None,
    contacts: Annotated[int, typer.Option(
        min=MIN_CONTACTS, max=MAX_CONTACTS,
        help="Sample contacts on the demo list (when the list is made).")] = 3000,
) -> None:
    """Send a sample campaign into the sandbox: a list, a template, a campaign, then the counts
    and where to look. Nothing leaves this machine."""
    if config is not None and dir_ is not None:
        fail("give --dir or --config, not both", 2)
    config_path = _demo_config(dir_ or DEMO_DIR) if config is None else Path(config)
    settings = settings_from(str(config_path))
    if not settings.delivery.sandbox:
        fail(f"{config_path} is not in sandbox mode ([delivery] sandbox = false): a demo must "
             "never mail real people. Run `mailprime demo` without --config for a data "
             "directory of its own, or set [delivery] sandbox = true.", 2)
    shown = _where(settings)  # before the in-process server's settings are trimmed
    try:
        outcome = asyncio.run(_run(settings, contacts))
    except DomainError as exc:
        fail(exc.message)
    _report(outcome, settings, config_path, shown)
    if outcome.status is not CampaignStatus.SENT and outcome.status is not CampaignStatus.SENDING:
        fail(f"the campaign is {outcome.status.value} (`mailprime campaign show` says why)", 1)
    if not outcome.finished:
        fail("the campaign has not finished within the demo's deadline: serve this data "
             "directory to let it finish, and follow it with `mailprime campaign stats`", 1)


def _demo_config(directory: Path) -> Path:
    """The demo directory's configuration, made by `init` (and given https links and a postal
    address) when it does not exist yet."""
    config_path = directory / "mailprime.toml"
    if config_path.exists():
        console.print(f"reusing   {escape(str(config_path))}")
        return config_path
    init(dir_=directory, domain=DEMO_DOMAIN, hostname="localhost", sandbox=True, force=False)
    text = config_path.read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    document = tomllib.loads(text)
    # Links in campaign mail must be https (RFC 8058 3.1); in production a TLS proxy sits in
    # front of [http] and this names it. A host of the From domain, as filters like (the
    # pre-flight warns of links to other domains); in the sandbox nobody follows them.
    document["http"]["public_url"] = f"https://mail.{DEMO_DOMAIN}"
    document["marketing"] = {"postal_address": POSTAL_ADDRESS}
    config_path.write_text(header + "# Made by `mailprime demo`: sandbox mode, https links and "
                           "a sample postal address.\n\n" + tomli_w.dumps(document),
                           encoding="utf-8")
    return config_path


@dataclass(frozen=True)
class Where:
    http: str | None  # the API's address when [http] is on
    imap: str | None  # an IMAP listener, "host:port (tls)"


def _where(settings: Settings) -> Where:
    http = None
    if settings.http.enabled:
        host = settings.http.address
        http = f"http://{f'[{host}]' if ':' in host else host}:{settings.http.port}"
    # An implicit-TLS IMAP port first: what a mail client is most simply pointed at.
    lst = min((x for x in settings.listeners if x.role is Role.IMAP),
              key=lambda x: x.tls is not TlsMode.IMPLICIT, default=None)
    security = {TlsMode.IMPLICIT: "TLS", TlsMode.STARTTLS: "STARTTLS", TlsMode.NONE: "plain"}
    imap = None if lst is None else f"{lst.address}:{lst.port} ({security[lst.tls]})"
    return Where(http, imap)


async def _run(settings: Settings, contacts: int) -> Outcome:
    async with opened_store(settings) as store:
        started = await _prepare(store, settings, contacts)
    from mailprime.runtime import start_server  # noqa: PLC0415 - see the imports above

    # The runtime without listeners: the campaign runner and the delivery worker are all it
    # needs, and a server already serving this data directory keeps its ports.
    settings.listeners = []
    settings.http.enabled = False
    settings.webhooks.enabled = False  # the events stay: a served node posts them later
    settings.marketing.dispatch_poll_seconds = POLL_SECONDS
    server = await start_server(settings)
    try:
        status, stats, finished = await _follow(server, started)
        mailbox = await _capture_mailbox(server.store, settings)
        sample = await _write_sample(server.store, settings, mailbox, started.campaign)
    finally:
        await server.stop(grace=2.0)
    return Outcome(started, status, stats, finished, sample, mailbox)


async def _prepare(store: Store, settings: Settings, contacts: int) -> Started:
    from mailprime.marketing.campaigns import (  # noqa: PLC0415 - see the imports above
        PreflightFailed,
        create_campaign,
        start_campaign,
    )
    from mailprime.marketing.preflight import errors  # noqa: PLC0415
    from mailprime.services.dkim_keys import DkimKeys  # noqa: PLC0415

    domains = await store.list_domains()
    if not domains:
        fail("no local domain to send from (`mailprime domain add`)", 1)
    domain = domains[0]
    if not settings.http.base_url.startswith("https://"):
        settings.http.public_url = f"https://mail.{domain}"  # see _demo_config
        console.print(escape(f"links     {settings.http.base_url} for this run (campaign links "
                             "must be https, RFC 8058; set [http] public_url for real sends)"))
    clock = SystemClock()
    if not await store.list_dkim_keys(domain, active_only=True):
        made = await DkimKeys(store, clock).generate(domain)
        console.print(f"DKIM      keys {', '.join(k.selector for k in made)} made for {domain} "
                      f"(`mailprime dkim dns {domain}` shows the records to publish)")
    mailing_list = await _audience(store, contacts)
    template = await _template(store, domain)
    name = await _free_name(store)
    campaign = await create_campaign(store, CampaignDraft(
        name=name, template_id=template.id, list_ids=(mailing_list.id,),
        from_address=f"news@{domain}", from_name="mailprime demo",
        track_opens=settings.http.track_opens, track_clicks=settings.http.track_clicks,
        postal_address=settings.marketing.postal_address or POSTAL_ADDRESS))
    audience = await store.count_audience([mailing_list.id], sending_domain=domain)
    counts = dict(next(c for m, c in await store.list_lists() if m.id == mailing_list.id))
    confirmed = counts.get(MembershipStatus.CONFIRMED, 0)
    left_out = {"unconfirmed (double opt-in not done)": counts.get(MembershipStatus.UNCONFIRMED, 0),
                "unsubscribed": counts.get(MembershipStatus.UNSUBSCRIBED, 0),
                "suppressed (bounced or complained)": max(0, confirmed - audience)}
    console.print(f"campaign  {escape(name)} (id {campaign.id}): template {TEMPLATE_NAME}, "
                  f"list {LIST_NAME}, from news@{domain}; pre-flight:")
    try:
        campaign, problems = await start_campaign(store, campaign,
                                                  base_url=settings.http.base_url, now=clock.now())
    except PreflightFailed as exc:
        _print_problems(list(exc.problems))
        fail(f"{len(errors(list(exc.problems)))} pre-flight error(s): the demo campaign cannot "
             "start", 1)
    _print_problems(problems)
    if not problems:
        console.print("  no problem found")
    return Started(campaign, mailing_list, audience, left_out)


def _print_problems(problems: list[Problem]) -> None:
    from mailprime.cli.campaign_cmd import _print_problems as show  # noqa: PLC0415

    show(problems)


async def _audience(store: Store, contacts: int) -> MailingList:
    """The demo list, made with `contacts` sample contacts, or the one a first run made."""
    found = await store.get_list(LIST_NAME)
    if found is not None:
        members = sum(next(c for m, c in await store.list_lists() if m.id == found.id).values())
        console.print(f"list      reusing {LIST_NAME} ({members:,} contacts; --contacts applies "
                      "to a new list only)")
        return found
    from mailprime.marketing.contacts import contact_input  # noqa: PLC0415

    made = await store.create_list(LIST_NAME, description="mailprime demo: sample contacts",
                                   opt_in=OptIn.DOUBLE)
    people = [sample_contact(n) for n in range(contacts)]
    # Validated as any import is (normal form); the sample is made valid, so none is refused.
    people = [contact_input(p.email, p.name, p.attributes) for p in people]
    confirmed_end = contacts - EXCLUDED_EACH  # the last few stay unconfirmed
    evidence = ConsentEvidence(ConsentSource.IMPORT, "mailprime demo")
    with Progress(TextColumn("contacts  "), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("contacts", total=contacts)
        for start in range(0, contacts, IMPORT_BATCH):
            batch = people[start:start + IMPORT_BATCH]
            for status, rows in (
                    (MembershipStatus.CONFIRMED, [p for i, p in enumerate(batch, start)
                                                  if i < confirmed_end]),
                    (MembershipStatus.UNCONFIRMED, [p for i, p in enumerate(batch, start)
                                                    if i >= confirmed_end])):
                if rows:
                    await store.upsert_contacts(rows, mode=ImportMode.UPSERT, list_id=made.id,
                                                status=status, evidence=evidence)
            bar.update(task, completed=min(contacts, start + IMPORT_BATCH))
    now = datetime.now(UTC)
    suppressed = people[confirmed_end - 2 * EXCLUDED_EACH:confirmed_end - EXCLUDED_EACH]
    for person in suppressed:  # as a hard bounce would have left them
        await store.suppress(Suppression(person.email.lower(), GLOBAL_SCOPE,
                                         SuppressionReason.HARD_BOUNCE, now,
                                         detail="mailprime demo: 550 5.1.1 user unknown"))
    for person in people[confirmed_end - EXCLUDED_EACH:confirmed_end]:  # one click each
        contact = await store.get_contact(person.email)
        if contact is not None:
            await store.set_membership(contact.id, made.id, status=MembershipStatus.UNSUBSCRIBED,
                                       evidence=ConsentEvidence(ConsentSource.ONE_CLICK))
    console.print(f"list      {LIST_NAME}: {contacts:,} sample contacts at "
                  f"{', '.join(DOMAINS)} ({EXCLUDED_EACH} each unconfirmed, unsubscribed and "
                  "suppressed)")
    return made


async def _template(store: Store, domain: str) -> Template:
    found = await store.get_template_by_name(TEMPLATE_NAME)
    if found is not None:
        return found
    return await store.create_template(TemplateFields(
        TEMPLATE_NAME, SUBJECT, HTML.replace("DOMAIN", domain), TEXT.replace("DOMAIN", domain)))


async def _free_name(store: Store) -> str:
    n = 1
    while await store.get_campaign_by_name(f"demo-{n}") is not None:
        n += 1
    return f"demo-{n}"


async def _follow(server: Server, started: Started
                  ) -> tuple[CampaignStatus, CampaignStats, bool]:
    """Until the campaign is over and all it queued is delivered (True), or the deadline."""
    store = server.store
    campaign = started.campaign
    deadline = time.monotonic() + 120.0 + started.audience / 20  # ~20/s is slow for the sandbox
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        queued = bar.add_task("queued   ", total=started.audience)
        delivered = bar.add_task("delivered", total=started.audience)
        while True:
            current = await store.get_campaign(campaign.id)
            status = current.status if current is not None else CampaignStatus.CANCELLED
            stats = await store.campaign_stats(campaign.id)
            k = stats.counters
            bar.update(queued, completed=k.queued + k.skipped + k.failed)
            # Once dispatch is over, what it queued is all there is to deliver.
            bar.update(delivered, completed=stats.delivered,
                       total=started.audience if status is CampaignStatus.SENDING else k.queued)
            over = status is not CampaignStatus.SENDING
            if over and (status is not CampaignStatus.SENT
                         or stats.delivered + stats.bounced >= k.queued):
                return status, stats, status is CampaignStatus.SENT
            if time.monotonic() > deadline:
                return status, stats, False
            for task in (server.campaigns_task, server.worker_task):
                if task is not None and task.done():  # it failed (and said why in the log)
                    fail(f"the server's {task.get_name()} task stopped: the demo cannot go on", 1)
            await asyncio.sleep(POLL_SECONDS)


async def _capture_mailbox(store: Store, settings: Settings) -> str:
    """The sandbox's capture mailbox, as the runtime picks it ([delivery] sandbox_mailbox)."""
    if settings.delivery.sandbox_mailbox:
        return settings.delivery.sandbox_mailbox
    return f"postmaster@{(await store.list_domains())[0]}"


async def _write_sample(store: Store, settings: Settings, mailbox: str,
                        campaign: Campaign) -> Path | None:
    """The newest captured message of the campaign (its List-Id names the demo list), written
    to <data>/demo/<campaign>.eml; None if none was captured."""
    from mailprime.delivery.sandbox import SANDBOX_FOLDER  # noqa: PLC0415
    from mailprime.marketing.message_builder import list_id_for  # noqa: PLC0415

    account = await store.get_account(mailbox)
    if account is None:
        return None
    captured = sorted(await store.list_messages(account.id, SANDBOX_FOLDER),
                      key=lambda m: m.uid, reverse=True)
    demo_list = await store.get_list_by_id(campaign.list_ids[0])
    if demo_list is None:
        return None
    list_id = f"<{list_id_for(demo_list.list_id_label, campaign.sending_domain)}>".encode()
    for message in captured[:50]:
        content = await store.read_blob(message.blob_id)
        head = content.split(b"\r\n\r\n", 1)[0]
        if list_id in head and b"\r\nDKIM-Signature:" in head:
            path = settings.data_path / "demo" / f"{campaign.name}.eml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            return path
    return None


def _report(outcome: Outcome, settings: Settings, config_path: Path, where: Where) -> None:
    started = outcome.started
    stats = outcome.stats
    k = stats.counters
    name = started.campaign.name
    table = Table("what", "contacts", title=f"campaign {name}: {outcome.status.value}")
    table.add_row(f"on the list {LIST_NAME}", f"{started.audience + sum(started.left_out.values()):,}")
    for reason, n in started.left_out.items():
        table.add_row(f"  left out: {reason}", f"{n:,}")
    table.add_row("sent (queued)", f"{k.queued:,}")
    table.add_row("skipped when sending", f"{k.skipped:,}")
    for reason, n in stats.skipped_by_reason.items():
        table.add_row(f"  skipped: {escape(reason)}", f"{n:,}")
    if k.failed:
        table.add_row("failed", f"{k.failed:,}")
        for reason, n in stats.failed_by_reason.items():
            table.add_row(f"  failed: {escape(reason)}", f"{n:,}")
    table.add_row("delivered into the sandbox", f"{stats.delivered:,}")
    console.print(table)
    config = escape(str(config_path))
    console.print("Where to look:")
    console.print(f"  data directory  {escape(str(settings.data_path))}")
    console.print(f"  configuration   {config}")
    console.print(f"  sandbox mailbox {escape(outcome.mailbox)}, folder Sandbox, in "
                  f"{escape(settings.database_url)}"
                  + (f"; over IMAP at {where.imap} when served" if where.imap else ""))
    if outcome.sample is not None:
        console.print(f"  one message     {escape(str(outcome.sample))}")
    else:
        err_console.print("no captured message of the campaign was found in the sandbox")
    console.print(f"  the campaign    mailprime campaign show {name} --config {config}")
    console.print(f"  its counts      mailprime campaign stats {name} --config {config}")
    if where.http is not None:
        console.print(f"  HTTP API        {where.http}/api/v1/docs (`mailprime apikey create` "
                      f"makes a key); links in the mail point at {settings.http.base_url}")
    # `make run` serves DATA/mailprime.toml (the Makefile's variable).
    make = (f"make run DATA={escape(str(config_path.parent))}, or "
            if config_path.name == "mailprime.toml" else "")
    console.print(f"  serve it        {make}mailprime serve --config {config}; then read the "
                  "Sandbox folder with any IMAP client (the postmaster password `init` printed)")


__all__ = ["demo", "sample_contact"]
