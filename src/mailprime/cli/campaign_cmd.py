"""`mailprime campaign`: create, inspect, check, test, start, pause, resume, cancel, count.

A campaign is made as a draft naming a template and lists; `preflight` lists what would hurt
its inbox placement (errors refuse the start); `test` queues its message to a few addresses;
`start` runs the pre-flight and hands the campaign to the server (which sends every campaign in
state sending; `--at` schedules it instead); `pause`, `resume` and `cancel` move it through the
state table (domain.campaigns), which refuses what is not allowed from where it stands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.campaigns import (
    MAX_NAME,
    Campaign,
    CampaignDraft,
    CampaignStats,
    CampaignStatus,
)
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import ListId, QueueId
from mailprime.storage.ports import Store

if TYPE_CHECKING:
    from mailprime.marketing.preflight import Problem

# The marketing modules are imported by the commands that use them: templates, the DKIM code
# and the Public Suffix List are a large share of the CLI's start-up, and --help needs none.

campaign_app = typer.Typer(help="Campaigns: a template sent to lists, with guardrails.",
                           no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The campaign's name.")]


async def _get(store: Store, name: str) -> Campaign:
    campaign = await store.get_campaign_by_name(name)
    if campaign is None:
        fail(f"no campaign named {name!r} (see `mailprime campaign list`)", 1)
    return campaign


def _print_problems(problems: list[Problem]) -> None:
    from mailprime.marketing.preflight import Severity  # noqa: PLC0415 - see above

    for p in problems:
        colour = "red" if p.severity is Severity.ERROR else "yellow"
        console.print(f"[{colour}]{p.severity}[/] {escape(f'[{p.code}]')} {escape(p.message)}")


@campaign_app.command("create")
def create(name: NameArg, config: ConfigOpt, *,
           template: Annotated[str, typer.Option(help="The template's name.")],
           list_: Annotated[list[str], typer.Option(
               "--list", help="A list to send to (repeat for several).")],
           from_: Annotated[str, typer.Option("--from", help="The From address.")],
           from_name: Annotated[str, typer.Option(help="The From display name.")] = "",
           reply_to: Annotated[str | None, typer.Option(help="A Reply-To address.")] = None,
           subject: Annotated[str | None, typer.Option(
               help="A subject (template) instead of the template's.")] = None,
           segment: Annotated[str | None, typer.Option(
               help="Only the contacts of this segment.")] = None,
           rate: Annotated[int, typer.Option(
               help="Messages a minute at most (0: as fast as the queue takes them).")] = 0,
           track_opens: Annotated[bool | None, typer.Option(
               "--track-opens/--no-track-opens",
               help="Open pixel (default: [http] track_opens).")] = None,
           track_clicks: Annotated[bool | None, typer.Option(
               "--track-clicks/--no-track-clicks",
               help="Click redirects (default: [http] track_clicks).")] = None,
           postal_address: Annotated[str | None, typer.Option(
               help="The sender's postal address (default: [marketing] postal_address).")] = None,
           ) -> None:
    """Create a campaign (a draft)."""
    from mailprime.marketing.campaigns import create_campaign  # noqa: PLC0415 - see above

    if not name.strip() or len(name) > MAX_NAME:
        fail(f"a name is 1 to {MAX_NAME} characters", 2)

    async def act(store: Store, settings: Settings) -> Campaign:
        found = await store.get_template_by_name(template)
        if found is None:
            fail(f"no template named {template!r}", 1)
        list_ids: list[ListId] = []
        for list_name in list_:
            mailing_list = await store.get_list(list_name)
            if mailing_list is None:
                fail(f"no list named {list_name!r}", 1)
            list_ids.append(mailing_list.id)
        segment_id = None
        if segment is not None:
            stored = await store.get_segment(segment)
            if stored is None:
                fail(f"no segment named {segment!r}", 1)
            segment_id = stored.id
        return await create_campaign(store, CampaignDraft(
            name=name, template_id=found.id, list_ids=tuple(list_ids), from_address=from_,
            from_name=from_name, reply_to=reply_to, subject=subject, segment_id=segment_id,
            rate_per_minute=rate,
            track_opens=settings.http.track_opens if track_opens is None else track_opens,
            track_clicks=settings.http.track_clicks if track_clicks is None else track_clicks,
            postal_address=(settings.marketing.postal_address if postal_address is None
                            else postal_address)))

    made = run_with_store(config, act)
    console.print(f"campaign {escape(made.name)} created (id {made.id}, draft); run "
                  f"`mailprime campaign preflight {escape(made.name)}`")


@campaign_app.command("list")
def list_campaigns(config: ConfigOpt, status: Annotated[CampaignStatus | None, typer.Option(
        help="Only campaigns in this state.")] = None) -> None:
    """List the campaigns, oldest first."""

    async def act(store: Store, _: Settings) -> list[Campaign]:
        return list(await store.list_campaigns(status=status, limit=10_000))

    found = run_with_store(config, act)
    table = Table("id", "name", "status", "from", "rate/min", "created (UTC)")
    for c in found:
        table.add_row(str(c.id), escape(c.name), c.status.value, escape(c.from_address),
                      str(c.rate_per_minute or "-"), c.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    console.print(f"{len(found)} campaign(s)")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


@campaign_app.command("show")
def show(name: NameArg, config: ConfigOpt) -> None:
    """Print a campaign's settings, state and counters."""

    async def act(store: Store, _: Settings) -> tuple[Campaign, str, list[str], CampaignStats]:
        c = await _get(store, name)
        t = await store.get_template(c.template_id)
        lists = [m.name if (m := await store.get_list_by_id(i)) else f"#{i} (deleted)"
                 for i in c.list_ids]
        return c, t.name if t else f"#{c.template_id} (deleted)", lists, \
            await store.campaign_stats(c.id)

    c, template, lists, stats = run_with_store(config, act)
    table = Table("field", "value", show_header=False)
    for key, value in (
            ("id", str(c.id)), ("name", c.name), ("status", c.status.value),
            ("pause reason", f"{c.pause_reason}: {c.pause_detail}" if c.pause_reason else "-"),
            ("template", template), ("lists", ", ".join(lists)),
            ("segment", f"#{c.segment_id}" if c.segment_id else "-"),
            ("from", f"{c.from_name} <{c.from_address}>" if c.from_name else c.from_address),
            ("reply-to", c.reply_to or "-"), ("subject", c.subject or "(the template's)"),
            ("rate", f"{c.rate_per_minute}/min" if c.rate_per_minute else "no limit"),
            ("tracking", f"opens {'on' if c.track_opens else 'off'}, clicks "
                         f"{'on' if c.track_clicks else 'off'}"),
            ("postal address", c.postal_address or "-"), ("scheduled", _when(c.scheduled_at)),
            ("started", _when(c.started_at)), ("finished", _when(c.finished_at)),
            ("queued", str(stats.counters.queued)), ("pending", str(stats.counters.pending)),
            ("skipped", str(stats.counters.skipped)), ("failed", str(stats.counters.failed))):
        table.add_row(key, escape(value))
    console.print(table)


@campaign_app.command("preflight")
def preflight_cmd(name: NameArg, config: ConfigOpt) -> None:
    """List what would hurt the campaign's inbox placement; exit 1 if anything refuses the start."""
    from mailprime.adapters.spam_preflight import spam_scorer  # noqa: PLC0415 - see above
    from mailprime.marketing.preflight import errors, preflight  # noqa: PLC0415 - see above

    async def act(store: Store, settings: Settings) -> list[Problem]:
        return await preflight(store, await _get(store, name), base_url=settings.http.base_url,
                               spam=spam_scorer(settings))

    problems = run_with_store(config, act)
    _print_problems(problems)
    if errors(problems):
        fail(f"{len(errors(problems))} error(s): the campaign cannot start", 1)
    console.print(f"ready to start ({len(problems)} warning(s))")


@campaign_app.command("test")
def test(name: NameArg, config: ConfigOpt, to: Annotated[list[str], typer.Option(
        "--to", help="An address to send the test to (repeat for several, at most 20).")]) -> None:
    """Queue the campaign's message to a few addresses ("[Test]" subject; not counted)."""
    from mailprime.marketing.dispatch import DispatchConfig, Dispatcher  # noqa: PLC0415
    from mailprime.marketing.tokens import TokenSigner  # noqa: PLC0415
    from mailprime.services import verp_key  # noqa: PLC0415
    from mailprime.services.dkim_keys import DkimSigner  # noqa: PLC0415

    async def act(store: Store, settings: Settings) -> list[QueueId]:
        campaign = await _get(store, name)
        keys = verp_key.load_or_create(settings.http.secret_path(settings.data_path))
        clock = SystemClock()
        dispatcher = Dispatcher(store, DkimSigner(store, clock), TokenSigner(keys),
                                DispatchConfig(base_url=settings.http.base_url), clock=clock)
        return await dispatcher.test_send(campaign, to)

    for address, queue_id in zip(to, run_with_store(config, act), strict=True):
        console.print(f"test to {escape(address)} queued as {queue_id}")


@campaign_app.command("start")
def start(name: NameArg, config: ConfigOpt, at: Annotated[datetime | None, typer.Option(
        help="Start at this time (ISO 8601; UTC unless it says otherwise) instead of now.")
        ] = None) -> None:
    """Run the pre-flight, then hand the campaign to the server (sending, or scheduled)."""
    from mailprime.adapters.spam_preflight import spam_scorer  # noqa: PLC0415 - see above
    from mailprime.marketing.campaigns import PreflightFailed, start_campaign  # noqa: PLC0415
    from mailprime.marketing.preflight import errors  # noqa: PLC0415 - see above
    when = at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at

    async def act(store: Store, settings: Settings) -> tuple[Campaign, list[Problem]]:
        try:
            return await start_campaign(store, await _get(store, name),
                                        base_url=settings.http.base_url,
                                        now=SystemClock().now(), at=when,
                                        spam=spam_scorer(settings))
        except PreflightFailed as exc:
            _print_problems(list(exc.problems))
            fail(f"{len(errors(list(exc.problems)))} pre-flight error(s): not started", 1)

    campaign, problems = run_with_store(config, act)
    _print_problems(problems)
    if campaign.status is CampaignStatus.SCHEDULED:
        console.print(f"campaign {escape(campaign.name)} scheduled for "
                      f"{_when(campaign.scheduled_at)}")
    else:
        console.print(f"campaign {escape(campaign.name)} is sending (the running server "
                      "dispatches it; `mailprime campaign stats` follows it)")


def _move(name: str, config: str, verb: str, action: str) -> None:
    from mailprime.marketing.campaigns import (  # noqa: PLC0415 - see above
        cancel_campaign,
        pause_campaign,
        resume_campaign,
    )

    async def act(store: Store, _: Settings) -> Campaign:
        campaign = await _get(store, name)
        if action == "pause":
            return await pause_campaign(store, campaign)
        if action == "resume":
            return await resume_campaign(store, campaign)
        return await cancel_campaign(store, campaign)

    moved = run_with_store(config, act)
    console.print(f"campaign {escape(moved.name)} {verb} (now {moved.status.value})")


@campaign_app.command("pause")
def pause(name: NameArg, config: ConfigOpt) -> None:
    """Pause a sending campaign (it stops after the batch in hand)."""
    _move(name, config, "paused", "pause")


@campaign_app.command("resume")
def resume(name: NameArg, config: ConfigOpt) -> None:
    """Resume a paused campaign where it stopped (nobody is mailed twice)."""
    _move(name, config, "resumed", "resume")


@campaign_app.command("cancel")
def cancel(name: NameArg, config: ConfigOpt) -> None:
    """Cancel a campaign for good (what is queued already still goes out)."""
    _move(name, config, "cancelled", "cancel")


@campaign_app.command("stats")
def stats(name: NameArg, config: ConfigOpt) -> None:
    """Counts: queued, skipped (by reason), delivered, bounced, complained, opened, clicked."""

    async def act(store: Store, _: Settings) -> tuple[Campaign, CampaignStats]:
        c = await _get(store, name)
        return c, await store.campaign_stats(c.id)

    c, s = run_with_store(config, act)
    table = Table("measure", "count")
    k = s.counters
    rows = [("queued (sent)", k.queued), ("pending", k.pending), ("skipped", k.skipped)]
    rows += [(f"  skipped: {reason}", n) for reason, n in s.skipped_by_reason.items()]
    rows += [("failed", k.failed)]
    rows += [(f"  failed: {reason}", n) for reason, n in s.failed_by_reason.items()]
    rows += [("delivered", s.delivered), ("bounced", s.bounced), ("hard bounces", k.hard_bounces),
             ("complained", k.complaints), ("opened (people)", s.opened),
             ("opened (machines)", s.machine_opens), ("clicked", s.clicked),
             ("unsubscribed", s.unsubscribed)]
    for label, n in rows:
        table.add_row(escape(label), str(n))
    console.print(f"campaign {escape(c.name)}: {c.status.value}"
                  + (f" ({c.pause_reason}: {escape(c.pause_detail)})" if c.pause_reason else ""))
    console.print(table)
