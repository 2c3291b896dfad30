"""Campaign messages built and signed in worker processes (marketing.build_pool): a campaign
dispatched through real worker processes reaches everyone once with a valid signature and
personal content; a recipient's template or header error comes back as the same exception as
in process; a dead worker is replaced and its batch built again, a batch that kills its
workers every time pauses the campaign with nothing written, workers ignore the group's SIGINT
and SIGTERM; and workers whose dispatcher is killed with SIGKILL exit by themselves."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailprime.domain.campaigns import CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.domain.errors import StorageError
from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.build_pool import RESULT_PIPE_SIZE, BuildPool, BuildSpec, build_chunk, processes_for
from mailprime.marketing.dispatch import DispatchConfig, Dispatcher, DispatchError
from mailprime.marketing.message_builder import CampaignInfo, HeaderError
from mailprime.marketing.templates import Recipient, RenderError
from mailprime.marketing.tokens import TokenSigner
from mailprime.message.dkim import DkimAlgorithm, generate_private_key, load_private_key, public_key_record
from mailprime.services.dkim_keys import DkimSigner
from tests.marketing.campaign_fixtures import BASE_URL, seed
from tests.marketing.test_dispatch import (
    SECRET,
    dispatcher,
    queue_by_address,
    sqlite,
    started,
)
from tests.support.dkim_verifiers import dkimpy_verify

NOW = datetime.now(UTC).replace(microsecond=0)

REPO = Path(__file__).resolve().parents[2]
INFO = CampaignInfo(CampaignId(7), "Spring", "news@a.test", "A News", "Weekly", "weekly-1",
                    "1 Main St, Springfield", ListId(1))


def spec(html: str = "<p>Hi {{ name }}, {{ 100 // attributes.n }}</p>"
         '<a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}',
         pem: str | None = None) -> BuildSpec:
    pem = pem or generate_private_key(DkimAlgorithm.ED25519_SHA256)
    return BuildSpec(subject="For {{ name }}", html=html, text=None, info=INFO,
                     base_url=BASE_URL, link_secrets=(SECRET,), list_id=ListId(1),
                     clicks=True, opens=True, dkim=(("a.test", "s1", pem),))


def test_the_dispatcher_with_worker_processes_mails_everyone_once_signed(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=260)
            await started(store, seeded)
            d = dispatcher(store, batch_size=120, build_processes=2)  # 3 batches, 2 made ahead
            assert await d.run(seeded.campaign.id) is CampaignStatus.SENT
            assert d.builders_cpu_seconds > 0  # the workers did the building (read at close)
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}
            counters = await store.campaign_counters(seeded.campaign.id)
            assert (counters.queued, counters.pending, counters.failed) == (260, 0, 0)
            for message, rcpts in await store.list_queue(limit=3):
                content = await store.read_blob(message.blob_id)
                assert [v.result for v in dkimpy_verify(content, seeded.dkim_records)] == [
                    "pass", "pass"]  # RSA-2048 and Ed25519, signed in a worker
                msg = email.message_from_bytes(content, policy=email.policy.default)
                contact = await store.get_contact(rcpts[0].address)
                assert contact is not None
                assert msg["To"].addresses[0].addr_spec == contact.email
                assert msg["Subject"] == f"News for {contact.name} in {contact.attributes['city']}"
                assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                html = next(p for p in msg.walk()
                            if p.get_content_type() == "text/html").get_content()
                assert f"{BASE_URL}/t/c/" in html and f"{BASE_URL}/t/o/" in html

    asyncio.run(main())


def test_errors_come_back_as_the_exceptions_of_an_in_process_build() -> None:
    people = [Recipient("a@b.test", "Ann", {"n": 4}, ContactId(1)),
              Recipient("z@b.test", "Zed", {"n": 0}, ContactId(2)),  # 100 // 0
              Recipient("c@b.test", "Bad\x01Name", {"n": 5}, ContactId(3))]  # a control char

    async def main() -> None:
        pool = BuildPool(2)
        try:
            made = await pool.build(spec(), people, NOW)
        finally:
            pool.close()
        assert isinstance(made[0], tuple) and b"Hi Ann, 25" in made[0][0]
        assert made[0][0].startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
        assert isinstance(made[1], RenderError) and "ZeroDivisionError" in made[1].message
        assert isinstance(made[2], HeaderError) and "U+0001" in made[2].message

    asyncio.run(main())
    # The worker function itself, in this process: the same outcomes as data.
    outcomes = build_chunk(spec(), [(r.email, r.name, dict(r.attributes), r.contact_id)
                                    for r in people], NOW)
    assert [o[0] if isinstance(o[0], str) else "ok" for o in outcomes] == [
        "ok", "render", "header"]


def test_a_job_is_dated_by_the_dispatchers_clock_not_the_workers() -> None:
    when = NOW - timedelta(days=3, hours=5)  # any clock reading the dispatcher passes
    [(data, _utf8)] = build_chunk(spec(), [("a@b.test", "Ann", {"n": 2}, 1)], when)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Date"].datetime == when
    assert f"\tt={int(when.timestamp())};".encode() in data.split(b"\r\n\r\n", 1)[0]


def test_the_signature_verifies_against_the_key_the_spec_carries() -> None:
    pem = generate_private_key(DkimAlgorithm.RSA_SHA256)
    record = public_key_record(load_private_key(pem))
    [(data, _utf8)] = build_chunk(spec(pem=pem), [("a@b.test", "Ann", {"n": 2}, 1)], NOW)
    assert isinstance(data, bytes)
    assert [v.result for v in dkimpy_verify(data, {"s1._domainkey.a.test": record})] == ["pass"]


def test_a_dead_worker_is_replaced_and_its_batch_built_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=150)
            await started(store, seeded)
            shared = BuildPool(1)  # the server's pool, shared by its dispatchers
            try:
                # Started, then its worker killed, as the OOM killer would.
                await shared.build(spec(), [Recipient("a@b.test", "A", {"n": 1})], NOW)
                [pid] = shared.pids()
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    await asyncio.sleep(0.05)
                d = Dispatcher(store, DkimSigner(store, SystemClock()), TokenSigner([SECRET]),
                               DispatchConfig(base_url=BASE_URL, batch_size=100,
                                              build_processes=1),
                               clock=SystemClock(), builders=shared)
                assert await d.run(seeded.campaign.id) is CampaignStatus.SENT
                got = await queue_by_address(store)
                assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}
                assert shared.pids() and pid not in shared.pids()  # fresh, and not closed
            finally:
                shared.close()

    asyncio.run(main())


def test_a_batch_whose_workers_die_every_time_pauses_the_campaign(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=150)
            await started(store, seeded)
            d = dispatcher(store, batch_size=100, build_processes=1)
            stop = threading.Event()

            def kill_every_worker() -> None:  # as a contact whose message crashes its worker
                while not stop.is_set():
                    for pid in d._builders.pids() if d._builders is not None else []:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.01)

            killer = threading.Thread(target=kill_every_worker)
            killer.start()
            try:
                with pytest.raises(DispatchError, match="died 2 times on the same batch"):
                    await d.run(seeded.campaign.id)
            finally:
                stop.set()
                killer.join()
            counters = await store.campaign_counters(seeded.campaign.id)
            assert (counters.queued, counters.pending) == (0, 0)  # nothing of it written

    asyncio.run(main())


def test_workers_leave_sigint_and_sigterm_to_the_dispatcher() -> None:
    async def main() -> None:
        pool = BuildPool(1)
        try:
            await pool.build(spec(), [Recipient("a@b.test", "A", {"n": 1})], NOW)
            [pid] = pool.pids()
            os.kill(pid, signal.SIGINT)  # a Ctrl-C or a service manager's stop to the group
            os.kill(pid, signal.SIGTERM)
            made = await pool.build(spec(), [Recipient("b@b.test", "B", {"n": 1})], NOW)
            assert isinstance(made[0], tuple) and pool.pids() == [pid]
        finally:
            pool.close()
        with pytest.raises(StorageError, match="stopped"):  # closed: never started again
            await pool.build(spec(), [Recipient("c@b.test", "C", {"n": 1})], NOW)

    asyncio.run(main())


def test_secrets_stay_out_of_the_spec_repr() -> None:
    pem = generate_private_key(DkimAlgorithm.ED25519_SHA256)
    made = spec(pem=pem)
    assert "PRIVATE KEY" not in repr(made) and repr(SECRET) not in repr(made)
    assert made.key != spec().key  # another key: another spec in a worker's cache


def test_server_processes_share_the_cores() -> None:
    assert processes_for(0, 2, cores=8) == 4
    assert processes_for(0, 16, cores=8) == 1
    assert processes_for(3, 4, cores=8) == 3  # an explicit number is per process
    assert processes_for(-1, 1, cores=8) == 0


_ORPHAN = """
import asyncio, json, sys
from datetime import UTC, datetime
sys.path.insert(0, {repo!r})
from tests.marketing.test_build_pool import spec
from mailprime.marketing.build_pool import BuildPool
from mailprime.marketing.templates import Recipient

async def main():
    pool = BuildPool(2)
    await pool.build(spec(), [Recipient(f"u{{i}}@b.test", "U", {{"n": 1}}) for i in range(200)],
                     datetime.now(UTC))
    print(json.dumps(pool.pids()), flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_the_dispatching_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "orphans.py"
    script.write_text(_ORPHAN.format(repo=str(REPO)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "build workers outlived their dispatcher"


def test_build_processes_setting() -> None:
    assert processes_for(-1) == 0
    assert processes_for(3) == 3
    cores = len(os.sched_getaffinity(0))
    assert processes_for(0) == (cores if cores > 1 else 0)


def test_the_result_pipe_is_widened_where_the_kernel_allows() -> None:
    pool = BuildPool(1)
    try:
        executor, _area = pool._pool()
        reader = executor._result_queue._reader  # type: ignore[attr-defined]
        allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        size = fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ)
        assert size == RESULT_PIPE_SIZE or (allowed < RESULT_PIPE_SIZE and os.geteuid() != 0)
    finally:
        pool.close()
