"""Campaign throughput (issue 5): a 100,000-recipient campaign rendered, DKIM-signed (RSA-2048)
and durably queued, against `openssl speed -multi 2 rsa2048` in the same invocation.

What runs, in three processes so that each figure is its own:

1. seed (a child): a data directory with a config like `mailprime init --sandbox` writes
   (SQLite, sandbox delivery, an https public URL for the links), one RSA-2048 DKIM key for the
   sending domain, N confirmed contacts of a double opt-in list with a name and two attributes,
   the ~9 KB newsletter of bench.campaign_render as the template, and a campaign to the list
   with open and click tracking on, no rate limit.
2. campaign (a child, on uvloop as the server where it is installed): opens the store as the
   server does, starts the campaign (pre-flight, untimed) and runs the server's Dispatcher on
   it to the end; the timed part is that run alone: gate, render, tracking links, MIME
   build, DKIM signature, send rows, durable accept.
   No delivery worker runs (the messages stay queued). Rendering and signing run in the
   dispatcher's build worker processes (`[marketing] build_processes`, one per core by
   default; marketing.build_pool), as in the server. The child reads its own peak RSS (VmHWM
   in /proc/self/status) when the run is over and adds the workers' (read from /proc as their
   pool closes), so the figure is the campaign's and not the seeder's or OpenSSL's; CPU
   seconds are the child's and its workers'.
3. openssl: `openssl speed -multi 2 -seconds S rsa2048`, both cores signing, right after.

Then the parent checks the result on the database itself (sqlite3): exactly N queue messages
from the campaign, N recipients with N distinct addresses, every send row queued, and one
message picked from the queue verifies (dkimpy, against the key's TXT record). A fast wrong
bench is worthless: any mismatch fails the case.

Ratio = messages/s (wall clock, the whole run) over OpenSSL's 2-process sign/s: the share of
the machine's raw RSA-2048 signing rate left end to end. OpenSSL divides by its CPU time, so a
machine busy with other work lowers our figure and not its own: run on a quiet machine.

    python -m bench.campaign_bench [--contacts 100000] [--workdir DIR]
    python -m bench --case campaign [--contacts N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CONTACTS = 100_000
OPENSSL_SECONDS = 5
DOMAIN = "news.bench.test"
PUBLIC_URL = "https://mail.bench.test"
POSTAL = "Bench Ltd, 1 Main Street, Springfield, IL 62701"
SEED_BATCH = 5_000
CITIES = ("Oslo", "Köln", "Lyon", "Porto", "Brno", "Turku", "Gent")
PLANS = ("free", "pro", "team")
# The children's last stdout line is one JSON object with their figures.
_CHILD_TIMEOUT = 3600


@dataclass(frozen=True, slots=True)
class CampaignRun:
    contacts: int
    seconds: float  # wall clock of Dispatcher.run
    cpu_seconds: float  # the campaign process's CPU (all threads) during the run, workers too
    peak_rss_mb: float  # VmHWM of the campaign process, plus its build workers' added up
    seed_seconds: float
    openssl_multi2: float  # sign/s, 2 processes
    message_size: int  # octets of the checked message
    workers: int = 0  # build worker processes
    workers_cpu_seconds: float = 0.0  # their CPU, part of cpu_seconds

    @property
    def rate(self) -> float:
        return self.contacts / self.seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.openssl_multi2 if self.openssl_multi2 else 0.0


def config_text(data_dir: Path) -> str:
    return (f'[server]\nhostname = "mx.bench.test"\ndata_dir = "{data_dir}"\n'
            '[delivery]\nsandbox = true\n'
            f'[http]\npublic_url = "{PUBLIC_URL}"\n'
            f'[marketing]\npostal_address = "{POSTAL}"\n')


# ---- children ------------------------------------------------------------------------------------

async def _seed(config: Path, contacts: int) -> dict[str, object]:
    from bench.campaign_render import NEWSLETTER, SUBJECT  # noqa: PLC0415
    from mailprime.config import load_settings  # noqa: PLC0415
    from mailprime.domain.audience import (  # noqa: PLC0415
        ConsentEvidence,
        ConsentSource,
        ContactInput,
        ImportMode,
        MembershipStatus,
        OptIn,
    )
    from mailprime.domain.campaigns import CampaignDraft  # noqa: PLC0415
    from mailprime.domain.clock import SystemClock  # noqa: PLC0415
    from mailprime.domain.dkim import DkimKeyType  # noqa: PLC0415
    from mailprime.domain.templates import TemplateFields  # noqa: PLC0415
    from mailprime.marketing.campaigns import create_campaign  # noqa: PLC0415
    from mailprime.services.dkim_keys import DkimKeys  # noqa: PLC0415
    from mailprime.storage.sql import open_store  # noqa: PLC0415

    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        clock = SystemClock()
        await store.add_domain(DOMAIN)
        keys = DkimKeys(store, clock)
        await keys.generate(DOMAIN, key_type=DkimKeyType.RSA)
        records = {r.name: r.record for r in await keys.records(DOMAIN)}
        news = await store.create_list("weekly", opt_in=OptIn.DOUBLE)
        evidence = ConsentEvidence(ConsentSource.IMPORT, "v1")
        for start in range(0, contacts, SEED_BATCH):
            batch = [ContactInput(f"reader{i:06d}@r{i % 97}.bench.test", f"Reader {i}",
                                  {"city": CITIES[i % len(CITIES)], "plan": PLANS[i % 3],
                                   "picks": ["shoes", "hats", "maps"][: i % 4]})
                     for i in range(start, min(contacts, start + SEED_BATCH))]
            await store.upsert_contacts(batch, mode=ImportMode.UPSERT, list_id=news.id,
                                        status=MembershipStatus.CONFIRMED, evidence=evidence)
        template = await store.create_template(TemplateFields("newsletter", SUBJECT, NEWSLETTER))
        campaign = await create_campaign(store, CampaignDraft(
            name="Weekly picks", template_id=template.id, list_ids=(news.id,),
            from_address=f"news@{DOMAIN}", from_name="Bench News", postal_address=POSTAL,
            rate_per_minute=0, track_opens=True, track_clicks=True))
    finally:
        await store.close()
    return {"campaign_id": int(campaign.id), "records": records}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # noqa: PLC0415 (not Linux: ru_maxrss, kB there too)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _campaign(config: Path, campaign_id: int) -> dict[str, object]:
    from mailprime import heap  # noqa: PLC0415
    from mailprime.config import load_settings  # noqa: PLC0415
    from mailprime.domain.campaigns import CampaignStatus  # noqa: PLC0415
    from mailprime.domain.clock import SystemClock  # noqa: PLC0415
    from mailprime.domain.ids import CampaignId  # noqa: PLC0415
    from mailprime.marketing.build_pool import processes_for  # noqa: PLC0415
    from mailprime.marketing.campaigns import start_campaign  # noqa: PLC0415
    from mailprime.marketing.dispatch import DispatchConfig, Dispatcher  # noqa: PLC0415
    from mailprime.marketing.guardrails import GuardrailPolicy  # noqa: PLC0415
    from mailprime.marketing.tokens import TokenSigner  # noqa: PLC0415
    from mailprime.services import verp_key  # noqa: PLC0415
    from mailprime.services.dkim_keys import DkimSigner  # noqa: PLC0415
    from mailprime.storage.sql import open_store  # noqa: PLC0415

    settings = load_settings(config)
    # As the server opens it (runtime.start_server) and builds its dispatchers
    # (runtime._campaign_runner); the delivery worker is not started.
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max,
                             max_queue_lifetime=settings.delivery.max_queue_lifetime)
    try:
        clock = SystemClock()
        m = settings.marketing
        workers = processes_for(m.build_processes)
        tokens = TokenSigner(verp_key.load_or_create(settings.http.secret_path(settings.data_path)))
        dispatcher = Dispatcher(store, DkimSigner(store, clock), tokens, DispatchConfig(
            base_url=settings.http.base_url, owner=f"bench:{os.getpid()}",
            batch_size=m.dispatch_batch, lease_seconds=m.dispatch_lease_seconds,
            guardrails=GuardrailPolicy(min_sample=m.guardrail_min_sample,
                                       max_hard_bounce_rate=m.max_hard_bounce_rate,
                                       max_complaint_rate=m.max_complaint_rate),
            build_processes=workers), clock=clock)
        campaign = await store.get_campaign(CampaignId(campaign_id))
        assert campaign is not None
        await start_campaign(store, campaign, base_url=settings.http.base_url, now=clock.now())
        heap.settle()  # as a server process does once started (runtime.serve_forever)
        wall, cpu = time.perf_counter(), time.process_time()
        status = await dispatcher.run(campaign.id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        # The build workers' CPU and memory count too (marketing.build_pool).
        workers_cpu = dispatcher.builders_cpu_seconds
        cpu += workers_cpu
        peak = peak_rss_mb() + dispatcher.builders_peak_rss_kb / 1024
        if status is not CampaignStatus.SENT:
            raise RuntimeError(f"the campaign ended {status.value}, not sent")
    finally:
        await store.close()
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak,
            "workers": workers, "workers_cpu_seconds": workers_cpu}


def _child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.campaign_bench --child")
    p.add_argument("--child", choices=("seed", "campaign"), required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--contacts", type=int, default=CONTACTS)
    p.add_argument("--campaign-id", type=int, default=0)
    args = p.parse_args(argv)
    if args.child == "seed":
        result = asyncio.run(_seed(args.config, args.contacts))
    else:
        from mailprime.runtime import loop_runner  # noqa: PLC0415
        result = loop_runner()(_campaign(args.config, args.campaign_id))
    print(json.dumps(result), flush=True)


def _run_child(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "bench.campaign_bench", *args],
                          capture_output=True, text=True, timeout=_CHILD_TIMEOUT, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"campaign bench child {args[1]} failed (exit {done.returncode}): "
                           + " | ".join(tail))
    result: dict[str, object] = json.loads(lines[-1])
    return result


# ---- peer and checks -----------------------------------------------------------------------------

_RSA_LINE = re.compile(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+[\d.]+\s*$", re.MULTILINE)


def openssl_multi_rate(processes: int = 2, seconds: int = OPENSSL_SECONDS) -> float:
    """`openssl speed -multi N rsa2048`: RSA-2048 sign/s of N processes together."""
    done = subprocess.run(["openssl", "speed", "-multi", str(processes), "-seconds", str(seconds),
                           "rsa2048"], capture_output=True, text=True, timeout=seconds * 10 + 60,
                          check=False)
    found = _RSA_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"openssl speed -multi {processes} rsa2048: no sign/s figure "
                           f"(exit {done.returncode}): {(done.stderr or done.stdout)[-200:]}")
    return float(found.group(1))


def check_result(db: Path, campaign_id: int, contacts: int, records: dict[str, str]) -> int:
    """Raises AssertionError unless the queue holds exactly the campaign's messages, one per
    contact, every send row is queued and a queued message's DKIM signature verifies. Returns
    the checked message's size."""
    from tests.support.dkim_verifiers import dkimpy_verify  # noqa: PLC0415

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]  # noqa: E731
        messages = one("SELECT count(*) FROM queue_messages WHERE source = 'campaign'")
        everything = one("SELECT count(*) FROM queue_messages")
        rcpts = one("SELECT count(*) FROM queue_recipients")
        distinct = one("SELECT count(DISTINCT address) FROM queue_recipients")
        sends = dict(conn.execute("SELECT status, count(*) FROM campaign_sends "
                                  "WHERE campaign_id = ? GROUP BY status", (campaign_id,)))
        linked = one("SELECT count(*) FROM campaign_sends s JOIN queue_messages q "
                     "ON q.id = s.queue_id WHERE s.campaign_id = ?", campaign_id)
        queued_events = one("SELECT count(*) FROM events WHERE kind = 'queued'")
        assert (messages, everything) == (contacts, contacts), (
            f"{messages} campaign messages, {everything} in all; {contacts} expected")
        assert rcpts == distinct == contacts, f"{rcpts} recipients, {distinct} distinct"
        assert sends == {"queued": contacts}, f"send rows by status: {sends}"
        assert linked == contacts, f"{linked} send rows name a queued message"
        assert queued_events == contacts, f"{queued_events} QUEUED events"
        data, path, offset, size = conn.execute(
            "SELECT b.data, b.path, b.file_offset, b.size FROM queue_messages q "
            "JOIN blobs b ON b.id = q.blob_id ORDER BY q.created_at DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    if data is None:  # in a spool file of its own or (a batch's) shared
        assert path is not None, "the message has neither content nor a spool file"
        with open(db.parent / "spool" / path, "rb") as file:
            file.seek(offset or 0)
            data = file.read(size if offset is not None else -1)
    content = bytes(data)
    assert len(content) == size, f"the message holds {len(content)} octets, its row {size}"
    verdicts = [v.result for v in dkimpy_verify(content, records)]
    assert verdicts == ["pass"], f"DKIM of a queued message: {verdicts}"
    assert b"/t/c/" in content and b"/t/o/" in content, "tracking links missing"
    return len(content)


# ---- the case ------------------------------------------------------------------------------------

def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(contacts: int = CONTACTS, workdir: Path | None = None) -> CampaignRun:
    with tempfile.TemporaryDirectory(prefix="mailprime-bench-campaign-", dir=workdir) as tmp:
        data = Path(tmp)
        config = data / "mailprime.toml"
        config.write_text(config_text(data))
        progress(f"campaign: seeding {contacts:,} contacts ...")
        start = time.perf_counter()
        seeded = _run_child("--child", "seed", "--config", str(config),
                            "--contacts", str(contacts))
        seed_seconds = time.perf_counter() - start
        campaign_id = int(str(seeded["campaign_id"]))
        progress(f"campaign: dispatching to {contacts:,} contacts ...")
        ran = _run_child("--child", "campaign", "--config", str(config),
                         "--campaign-id", str(campaign_id))
        progress("campaign: openssl speed -multi 2 rsa2048 ...")
        peer = openssl_multi_rate()
        progress("campaign: checking the queue ...")
        records = seeded["records"]
        assert isinstance(records, dict)
        size = check_result(data / "mailprime.db", campaign_id, contacts, records)
    return CampaignRun(contacts, float(str(ran["seconds"])), float(str(ran["cpu_seconds"])),
                       float(str(ran["peak_rss_mb"])), seed_seconds, peer, size,
                       int(str(ran["workers"])), float(str(ran["workers_cpu_seconds"])))


CASE_NAME = "campaign, RSA-2048, queued"
PEER = "openssl speed -multi 2 rsa2048"


def row(r: CampaignRun) -> list[str]:
    return [CASE_NAME, PEER, f"{r.openssl_multi2:,.0f} sign/s", f"{r.rate:,.0f} msg/s",
            f"{r.ratio:.2f}x"]


def notes(r: CampaignRun) -> list[str]:
    return [f"\ncampaign: {r.contacts:,} contacts, ~{r.message_size / 1024:.0f} KB messages "
            "(tracking on, one RSA-2048 signature), SQLite, sandbox (nothing delivered):",
            f"  dispatched in {r.seconds:.1f} s ({r.rate:,.0f} msg/s wall clock, "
            f"{r.contacts / r.cpu_seconds:,.0f} msg per CPU second, {r.cpu_seconds / r.seconds:.2f}"
            f" cores busy); peak RSS {r.peak_rss_mb:,.0f} MB; seeding took {r.seed_seconds:.0f} s",
            f"  CPU per message: {r.cpu_seconds / r.contacts * 1e6:,.0f} us, of which "
            f"{r.workers_cpu_seconds / r.contacts * 1e6:,.0f} us in {r.workers} build worker "
            "process(es) (render + DKIM) and the rest in the dispatcher (audience, gate, writes)",
            f"  target: >= 0.50x of OpenSSL's 2-process rate ({r.ratio:.2f}x) and peak RSS under "
            f"300 MB ({r.peak_rss_mb:,.0f} MB); the queue, send rows and a DKIM signature checked"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        _child_main(argv)
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.campaign_bench", description=__doc__)
    p.add_argument("--contacts", type=int, default=int(os.environ.get("BENCH_CONTACTS", CONTACTS)))
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args.contacts, args.workdir)
    from bench.__main__ import table  # noqa: PLC0415

    print(table([["case", "peer", "peer rate", "mailprime rate", "ratio"], row(result)]))
    print("\n".join(notes(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

