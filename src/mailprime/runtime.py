"""Composition root: builds storage -> services -> listeners and the delivery worker, runs them,
and shuts down gracefully.

Theory of operation. `run_server` starts `workers` processes (1: this one) that each run
`serve_forever`: open the store, build one InboundService per SMTP listener (a Pop3Service per
POP3 one, one ImapService shared by the IMAP ones) and bind it with SO_REUSEPORT (so the kernel
spreads connections over the processes), start the delivery worker and the background tasks
(the campaign runner and, when enabled, the webhook dispatcher in every process — they share
the work through the store's leases; retention in the first process only), and write
`<data>/run/ready.json` with the bound ports. SIGTERM or SIGINT starts the drain: stop
accepting, give open sessions a grace period (then SMTP 421, POP3 -ERR [SYS/TEMP], IMAP BYE),
let in-flight deliveries finish or hand their leases back, close the store, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import os
import queue
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailprime import heap
from mailprime.adapters.list_consent import GateListConsent
from mailprime.adapters.mta_sts import mta_sts_routing
from mailprime.adapters.shaping import build_shaping
from mailprime.adapters.smtp_dialer import SmtpDialer
from mailprime.config import ListenerSettings, Role, Settings, TlsMode
from mailprime.delivery.bounce_policy import SyncBounces
from mailprime.delivery.sandbox import SandboxTransport
from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.smtp_transport import SmtpTransport
from mailprime.delivery.tls_reports import TlsReports
from mailprime.delivery.transport import Transport
from mailprime.delivery.verp_split import VerpSplitter
from mailprime.delivery.worker import DeliveryWorker, WorkerConfig
from mailprime.domain.clock import SystemClock
from mailprime.domain.errors import ConfigError, DomainError
from mailprime.domain.login_failures import FailurePolicy
from mailprime.logline import emit
from mailprime.logsetup import setup_logging
from mailprime.marketing.retention import RetentionTask
from mailprime.message.caching_resolver import CachingResolver
from mailprime.message.feedback_id import FeedbackIdConfig
from mailprime.message.msgid_token import MsgIdCodec
from mailprime.message.spf_memo import SpfMemo
from mailprime.message.verp import VerpCodec
from mailprime.net.dns import DnsResolver
from mailprime.net.http_client import HttpClient, verifying_context
from mailprime.net.imap_server import ImapListener, serve_imap
from mailprime.net.pop3_server import Pop3Listener, serve_pop3
from mailprime.net.smtp_server import SmtpListener, serve_smtp
from mailprime.net.tls import client_context, server_context
from mailprime.proto.imap.types import Limits as ImapLimits
from mailprime.proto.pop3.types import Pop3Capabilities, Pop3Limits
from mailprime.proto.smtp.types import ServerCapabilities, ServerLimits
from mailprime.services import verp_key
from mailprime.services.directory_cache import CachedDirectory
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.feedback import FeedbackConfig, FeedbackService
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.context import ImapConfig
from mailprime.services.imap.handler import ImapService
from mailprime.services.imap.quota import QuotaLimits
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.inject import Injector
from mailprime.services.mail_auth import LoginCache
from mailprime.services.mx_auth import MxAuthenticator, MxAuthPolicy
from mailprime.services.pop3 import Pop3Config, Pop3Service
from mailprime.services.replies import ReplyRecorder
from mailprime.services.rspamd import RspamdClient
from mailprime.services.suppression import SuppressionConfig, SuppressionPolicy
from mailprime.services.unsubscribe_mail import MailtoUnsubscribe
from mailprime.services.webhooks import WebhookConfig, WebhookDispatcher
from mailprime.storage.ports import Store
from mailprime.storage.recent import RecentContent
from mailprime.storage.sql import open_store

if TYPE_CHECKING:  # imported where used: the web stack and the campaign engine (FastAPI,
    # pydantic, Jinja2) cost every process ~1 s to import, and only some processes need them
    from mailprime.marketing.campaigns import CampaignRunner
    from mailprime.net.http_server import HttpListener

log = logging.getLogger("mailprime.runtime")
# How often each server process looks for spool files nothing names (`_sweep_spool`).
SPOOL_SWEEP_SECONDS = 3600.0


@dataclass(slots=True)
class Server:
    """A running node: what `serve_forever` and the tests hold on to."""

    settings: Settings
    store: Store
    worker: DeliveryWorker
    listeners: dict[str, SmtpListener | Pop3Listener | ImapListener] = field(default_factory=dict)
    worker_task: asyncio.Task[None] | None = None
    dkim: DkimSigner | None = None  # the process's DKIM signer (its key cache)
    tls_reports: TlsReports | None = None  # RFC 8460 counters, flushed in the background
    http: HttpListener | None = None  # the HTTP API, tracking and unsubscribe ([http])
    webhooks: WebhookDispatcher | None = None  # POSTs events to webhooks ([webhooks])
    webhooks_task: asyncio.Task[None] | None = None
    campaigns: CampaignRunner | None = None  # dispatches sending campaigns ([marketing])
    campaigns_task: asyncio.Task[None] | None = None
    retention_task: asyncio.Task[None] | None = None  # [marketing] retention_interval_hours
    spool_sweep_task: asyncio.Task[None] | None = None  # hourly (_sweep_spool)

    @property
    def ports(self) -> dict[str, int]:
        ports = {name: lst.port for name, lst in self.listeners.items()}
        if self.http is not None:
            ports["http"] = self.http.port
        return ports

    async def stop(self, grace: float = 10.0) -> None:
        for housekeeping in (self.retention_task, self.spool_sweep_task):
            if housekeeping is not None:
                housekeeping.cancel()  # a run cut short deletes the rest next time
                with contextlib.suppress(asyncio.CancelledError):
                    await housekeeping
        for lst in self.listeners.values():
            await lst.close()
        for lst in self.listeners.values():
            await lst.drain(grace)
        if self.http is not None:
            await self.http.stop(grace)
        if self.campaigns_task is not None:
            self.campaigns_task.cancel()  # no new dispatchers, then the running ones stop: a
            # batch cut short is reconciled by the next run (marketing.dispatch). A runner that
            # could not be built has been logged (_run_campaigns): the drain goes on.
            await asyncio.gather(self.campaigns_task, return_exceptions=True)
        if self.campaigns is not None:
            await self.campaigns.stop()
        await self.worker.stop(grace)
        if self.webhooks is not None and self.webhooks_task is not None:
            self.webhooks.stop()  # a POST in flight is cut short: its delivery is retried
            self.webhooks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.webhooks_task
        if self.worker_task is not None:
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
        if self.tls_reports is not None:
            await self.tls_reports.close()
        await self.store.close()


async def _build_transport(settings: Settings, store: Store,
                           tls_reports: TlsReports | None = None) -> Transport:
    if settings.delivery.sandbox:
        address = settings.delivery.sandbox_mailbox
        if not address:
            domains = await store.list_domains()
            if not domains:
                raise ConfigError("[delivery] sandbox: no local domain for the capture mailbox")
            address = f"postmaster@{domains[0]}"
        account = await store.get_account(address)
        if account is None:
            raise ConfigError(f"[delivery] sandbox_mailbox: no account {address}")
        return SandboxTransport(store, account.id, account.address)
    resolver = DnsResolver(settings.dns.nameservers, timeout=settings.dns.timeout)
    dialer = SmtpDialer(
        helo_name=settings.helo_name,
        ssl_context=client_context(verify=False),
        require_tls=settings.delivery.require_tls,
        connect_timeout=settings.delivery.connect_timeout,
        command_timeout=settings.delivery.command_timeout,
        verify_context=client_context(verify=True, cafile=settings.mta_sts.ca_file or None),
    )
    router, sts_dialer = mta_sts_routing(settings, store, resolver, clock=SystemClock(),
                                         dialer=dialer, reports=tls_reports)
    return SmtpTransport(router, sts_dialer, port=settings.delivery.mx_port,
                         shaping=build_shaping(settings, store, SystemClock()),
                         route_cache_seconds=settings.shaping.route_cache_seconds)


def _mx_authenticator(settings: Settings, store: Store) -> MxAuthenticator | None:
    """SPF/DKIM/DMARC/ARC verification (and rspamd) for the MX listeners, with a DNS resolver
    of their own whose cache follows [authentication] dns_cache_size / dns_max_ttl."""
    auth = settings.authentication
    auth.check()  # again: environment overrides were applied after the section was built
    if not auth.verify or not any(lst.role is Role.MX for lst in settings.listeners):
        return None
    resolver = CachingResolver(
        DnsResolver(settings.dns.nameservers, timeout=settings.dns.timeout,
                    cache_size=auth.dns_cache_size, max_ttl=auth.dns_max_ttl),
        max_seconds=min(auth.dns_memo_seconds, auth.dns_max_ttl), size=auth.dns_cache_size)
    spam = (RspamdClient(HttpClient(), auth.rspamd_url, timeout=auth.rspamd_timeout)
            if auth.rspamd_url else None)
    policy = MxAuthPolicy(
        authserv_id=auth.authserv_id or settings.server.hostname,
        dmarc_reject_action=auth.dmarc_reject_action,
        dmarc_quarantine_action=auth.dmarc_quarantine_action, junk_mailbox=auth.junk_mailbox,
        rspamd_fail_open=auth.rspamd_fail_open, rspamd_junk_action=auth.rspamd_junk_action)
    # SPF verdicts live no longer than the DNS answers they were computed from (spf_memo).
    spf_memo = SpfMemo(max_seconds=resolver.max_seconds, size=auth.dns_cache_size)
    return MxAuthenticator(resolver, policy, store, spam=spam, spf_memo=spf_memo)


def _bounce_handling(settings: Settings, store: Store, directory: CachedDirectory,
                     clock: SystemClock) -> tuple[VerpSplitter | None, SyncBounces, FeedbackService]:
    """VERP senders for the worker, its synchronous bounce policy, and the MX/submission side
    (bounces and complaints at the MX, the suppression gate, Feedback-ID): [bounces]."""
    b = settings.bounces
    b.check()  # again: environment overrides were applied after the section was built
    policy = SuppressionPolicy(store, clock, SuppressionConfig(
        scope=b.scope, hard_reasons=frozenset(b.hard_reasons), soft_bounce_limit=b.soft_bounce_limit,
        soft_bounce_days=b.soft_bounce_days, complaints=b.complaints,
        submission_gate=b.submission_gate))
    codec: VerpCodec | None = None
    verp: VerpSplitter | None = None
    if b.verp:
        codec = VerpCodec(verp_key.load_or_create(b.secret_path(settings.data_path)),
                          prefix=b.verp_prefix)
        verp = VerpSplitter(codec, directory, bounce_domain=b.verp_domain)
    feedback = FeedbackService(store, policy, codec=codec, directory=directory, config=FeedbackConfig(
        fbl_addresses=tuple(b.fbl_addresses), verp_max_age_days=b.verp_max_age_days,
        feedback_id=FeedbackIdConfig(sender_id=b.feedback_id_sender, mail_type=b.feedback_id_type,
                                     campaign=b.feedback_id_campaign)))
    return verp, SyncBounces(policy), feedback


def _capabilities(settings: Settings, listener: ListenerSettings) -> ServerCapabilities:
    return ServerCapabilities(
        hostname=settings.server.hostname,
        starttls=listener.tls is TlsMode.STARTTLS,
        auth_mechanisms=("PLAIN", "LOGIN") if listener.role is Role.SUBMISSION else (),
        # RFC 8689: offered (on TLS sessions only) where mail is accepted for relay; delivery
        # keeps the promise (delivery.requiretls).
        requiretls=settings.mta_sts.requiretls and listener.role in (Role.MX, Role.SUBMISSION),
    )


async def start_server(settings: Settings, *, reuse_port: bool = False) -> Server:
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max,
                             max_queue_lifetime=settings.delivery.max_queue_lifetime)
    clock = SystemClock()
    tls_reports = (TlsReports(store, clock, flush_interval=settings.mta_sts.report_flush_seconds)
                   if settings.mta_sts.enabled and settings.mta_sts.tls_reports else None)
    try:
        transport = await _build_transport(settings, store, tls_reports)
    except BaseException:
        await store.close()
        raise
    recent = RecentContent()
    directory = CachedDirectory(store, ttl=settings.server.directory_cache_seconds)
    try:
        verp, sync_bounces, feedback = _bounce_handling(settings, store, directory, clock)
    except BaseException:
        await store.close()
        raise
    dkim = DkimSigner(store, clock)  # one per process: its key cache is shared by every path
    injector = Injector(store, directory=directory, dkim=dkim)
    d = settings.delivery
    worker = DeliveryWorker(
        store, transport,
        schedule=RetrySchedule(first=d.retry_first, factor=d.retry_factor,
                               max_interval=d.retry_max_interval, lifetime=d.max_queue_lifetime),
        clock=clock, injector=injector,
        config=WorkerConfig(hostname=settings.helo_name, concurrency=d.concurrency,
                            # The SMTP transport caps connections per provider group itself.
                            per_destination=0 if isinstance(transport, SmtpTransport)
                            else d.per_destination_connections,
                            poll_interval=d.poll_interval, delay_warning=d.delay_warning,
                            lease_seconds=max(900.0, d.command_timeout * 3)),
        recent=recent, verp=verp, bounces=sync_bounces,
    )
    injector.on_queued = worker.wake
    server = Server(settings, store, worker, dkim=dkim, tls_reports=tls_reports)
    if tls_reports is not None:
        tls_reports.start()
    ssl_ctx: ssl.SSLContext | None = None
    if any(lst.tls is not TlsMode.NONE for lst in settings.listeners):
        ssl_ctx = server_context(str(settings.cert_path), str(settings.key_path))
    limits = ServerLimits(max_message_size=settings.limits.max_message_size,
                          max_recipients=settings.limits.max_recipients)
    imap: ImapService | None = None  # one per process: its caches and session counts are shared
    logins = LoginCache()  # one per process, for SMTP AUTH, IMAP and POP3 logins alike
    mx_auth = _mx_authenticator(settings, store)  # one per process: its DNS cache is shared
    try:
        keys = _link_keys(settings)  # once: the MX, the HTTP app and the campaigns all use them
        replies, unsubscribe = _list_mail(settings, store, directory, clock, keys)
    except BaseException:
        await server.stop(0)
        raise
    try:
        for lst in settings.listeners:
            if lst.role is Role.IMAP:
                imap = imap or _imap_service(settings, store, directory, logins)
                server.listeners[lst.name] = await _serve_imap(settings, lst, imap, ssl_ctx=ssl_ctx,
                                                               reuse_port=reuse_port)
            elif lst.role is Role.POP3:
                server.listeners[lst.name] = await _serve_pop3(
                    settings, lst, Pop3Service(store, directory, Pop3Config(
                        hostname=settings.server.hostname), logins=logins),
                    ssl_ctx=ssl_ctx, reuse_port=reuse_port)
            else:
                service = InboundService(
                    store,
                    InboundConfig(hostname=settings.server.hostname, role=lst.role.value,
                                  sender_policy=settings.submission.sender_policy),
                    clock, on_queued=worker.wake, directory=directory, recent=recent, handoff=worker,
                    logins=logins, dkim=dkim if lst.role is Role.SUBMISSION else None,
                    feedback=feedback,
                    mx_auth=mx_auth if lst.role is Role.MX else None,
                    replies=replies if lst.role is Role.MX else None, unsubscribe=unsubscribe,
                    list_consent=(GateListConsent(store) if lst.role is Role.SUBMISSION
                                  else None))
                server.listeners[lst.name] = await serve_smtp(
                    service, name=lst.name, host=lst.address, port=lst.port, tls_mode=lst.tls.value,
                    ssl_context=ssl_ctx, capabilities=_capabilities(settings, lst), limits=limits,
                    idle_timeout=settings.limits.idle_timeout, data_timeout=settings.limits.data_timeout,
                    max_connections_per_ip=settings.limits.max_connections_per_ip,
                    allow_plaintext_auth=lst.allow_plaintext_auth_on_loopback, reuse_port=reuse_port)
            log.info("listening: name=%s, role=%s, address=%s, port=%d, tls=%s", lst.name,
                     lst.role.value, lst.address, server.listeners[lst.name].port, lst.tls.value)
        make_runner = _campaign_runner(settings, store, clock, dkim, worker.wake, keys=keys)
        if settings.http.enabled:
            server.http = await _serve_http(settings, store, clock, keys, reuse_port=reuse_port,
                                            injector=injector)
    except BaseException:
        await server.stop(0)
        raise
    server.worker_task = asyncio.create_task(worker.run(), name="delivery")
    server.campaigns_task = asyncio.create_task(_run_campaigns(server, make_runner),
                                                name="campaigns")
    if settings.webhooks.enabled:
        server.webhooks = _webhook_dispatcher(settings, store, clock)
        server.webhooks_task = asyncio.create_task(server.webhooks.run(), name="webhooks")
    m = settings.marketing
    if m.retention_interval_hours > 0:
        retention = RetentionTask(store, clock, interval=m.retention_interval_hours * 3600,
                                  event_days=m.event_retention_days,
                                  message_days=m.message_retention_days)
        server.retention_task = asyncio.create_task(retention.run(), name="retention")
    # Content files left by writes that failed or were cut short, which only a sweep removes
    # (storage/sql/spool.py). Every process: sweeps side by side are harmless.
    server.spool_sweep_task = asyncio.create_task(_sweep_spool(store), name="spool sweep")
    return server


async def _sweep_spool(store: Store, interval: float = SPOOL_SWEEP_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            swept = await store.sweep_spool()
        except DomainError as exc:
            emit(log, "spool sweep", logging.ERROR, status="failed", reason=exc.message)
            continue
        except Exception:  # the task must outlive any one run (as retention's): log, go on
            log.exception("spool sweep: run failed")
            continue
        if swept:
            emit(log, "spool sweep", status="done", removed=swept)


def _link_keys(settings: Settings) -> list[bytes]:
    """The [http] link keys (tracking and unsubscribe tokens, signed Message-IDs) from the link
    secret file, created on first start like the VERP key (same file format and errors, which
    are named after the [http] setting here)."""
    try:
        return verp_key.load_or_create(settings.http.secret_path(settings.data_path))
    except ConfigError as exc:
        reason = exc.message.removeprefix("[bounces] verp_secret_file: ")  # same file format
        raise ConfigError(f"[http] token_secret_file: {reason}") from exc


def _list_mail(settings: Settings, store: Store, directory: CachedDirectory, clock: SystemClock,
               keys: list[bytes]) -> tuple[ReplyRecorder, MailtoUnsubscribe]:
    """What the MX does with mail answering ours: REPLIED events (signed Message-IDs) and the
    List-Unsubscribe mailto (signed unsubscribe tokens). Both read what the [http] link keys
    signed; the unsubscriber is marketing's, injected (services may not import marketing)."""
    from mailprime.marketing.tokens import TokenSigner  # noqa: PLC0415 (light; marketing's)
    from mailprime.marketing.unsubscribe import MailtoUnsubscriber  # noqa: PLC0415

    unsubscriber = MailtoUnsubscriber(store, TokenSigner(keys), clock,
                                      scope_mode=settings.bounces.scope)
    return (ReplyRecorder(store, MsgIdCodec(keys)), MailtoUnsubscribe(unsubscriber, directory))


async def _serve_pop3(settings: Settings, lst: ListenerSettings, service: Pop3Service, *,
                      ssl_ctx: ssl.SSLContext | None, reuse_port: bool) -> Pop3Listener:
    return await serve_pop3(
        service, name=lst.name, host=lst.address, port=lst.port, tls_mode=lst.tls.value,
        ssl_context=ssl_ctx, capabilities=Pop3Capabilities(settings.server.hostname),
        limits=Pop3Limits(max_auth_failures=settings.pop3.max_auth_failures),
        idle_timeout=settings.pop3.idle_timeout,
        max_connections_per_ip=settings.limits.max_connections_per_ip,
        allow_plaintext_auth=lst.allow_plaintext_auth_on_loopback,
        auth_failure_delay=settings.pop3.auth_failure_delay, reuse_port=reuse_port)


def _imap_service(settings: Settings, store: Store, directory: CachedDirectory,
                  logins: LoginCache) -> ImapService:
    imap = settings.imap
    config = ImapConfig(
        hostname=settings.server.hostname,
        max_append=settings.limits.max_message_size,
        quota=QuotaLimits(storage=imap.quota_bytes, messages=imap.quota_messages),
        max_sessions_per_account=imap.max_sessions_per_account,
        failures=FailurePolicy(first_delay=imap.auth_failure_delay,
                               max_delay=max(8.0, imap.auth_failure_delay),
                               max_failures=imap.max_auth_failures),
        idle_poll=imap.idle_poll,
    )
    return ImapService(store, config, cache=MessageContentCache(), directory=directory,
                       logins=logins)


async def _serve_imap(settings: Settings, lst: ListenerSettings, service: ImapService, *,
                      ssl_ctx: ssl.SSLContext | None, reuse_port: bool) -> ImapListener:
    return await serve_imap(
        service, name=lst.name, host=lst.address, port=lst.port, tls_mode=lst.tls.value,
        ssl_context=ssl_ctx, limits=ImapLimits(max_append=settings.limits.max_message_size),
        idle_timeout=settings.imap.idle_timeout,
        max_connections_per_ip=settings.imap.max_connections_per_ip,
        allow_plaintext_login=lst.allow_plaintext_auth_on_loopback, reuse_port=reuse_port)


def _webhook_dispatcher(settings: Settings, store: Store, clock: SystemClock) -> WebhookDispatcher:
    w = settings.webhooks
    w.check()
    return WebhookDispatcher(store, HttpClient(verifying_context(w.ca_file or None)), clock,
                             WebhookConfig(poll_interval=w.poll_interval, batch=w.batch,
                                           concurrency=w.concurrency, timeout=w.timeout,
                                           retry_base=w.retry_base, retry_max=w.retry_max,
                                           max_attempts=w.max_attempts))


async def _serve_http(settings: Settings, store: Store, clock: SystemClock, keys: list[bytes], *,
                      reuse_port: bool, injector: Injector | None = None) -> HttpListener:
    """The HTTP API, tracking and unsubscribe endpoints ([http]); links are signed with the
    link keys (`_link_keys`)."""
    from mailprime.adapters.spam_preflight import spam_scorer  # noqa: PLC0415
    from mailprime.marketing.tokens import TokenSigner  # noqa: PLC0415 (see TYPE_CHECKING above)
    from mailprime.net.http_server import serve_http  # noqa: PLC0415
    from mailprime.web.app import create_app  # noqa: PLC0415
    from mailprime.web.deps import WebDeps  # noqa: PLC0415

    http = settings.http
    http.check()  # again: environment overrides were applied after the section was built
    app = create_app(WebDeps.build(store, settings, clock, TokenSigner(keys),
                                   spam=spam_scorer(settings)))
    app.state.injector = injector  # POST /messages queues through it (and wakes the worker)
    listener = await serve_http(app, host=http.address, port=http.port, reuse_port=reuse_port,
                                trusted_proxies=http.trusted_proxies)
    log.info("listening: name=http, address=%s, port=%d, public_url=%s", http.address,
             listener.port, http.base_url)
    return listener


def _campaign_runner(settings: Settings, store: Store, clock: SystemClock, dkim: DkimSigner,
                     wake: Callable[[], None], *,
                     keys: list[bytes]) -> Callable[[], CampaignRunner]:
    """What builds the runner that sends the campaigns in state sending (and starts scheduled
    ones when due): links signed with the [http] link keys, messages DKIM-signed by the
    process's signer. The settings are checked now (the link keys were read already), so a
    bad configuration still stops the start; the campaign engine (Jinja2, css-inline,
    html2text: ~0.25 s to import) is imported only when the builder is called, in the runner's
    task, after ready."""
    m = settings.marketing
    m.check()  # again: environment overrides were applied after the section was built

    def build() -> CampaignRunner:
        from mailprime.marketing.build_pool import BuildPool, processes_for  # noqa: PLC0415
        from mailprime.marketing.campaigns import CampaignRunner  # noqa: PLC0415
        from mailprime.marketing.dispatch import DispatchConfig, Dispatcher  # noqa: PLC0415
        from mailprime.marketing.guardrails import GuardrailPolicy  # noqa: PLC0415
        from mailprime.marketing.tokens import TokenSigner  # noqa: PLC0415

        tokens = TokenSigner(keys)
        processes = processes_for(m.build_processes, settings.server.workers)
        # One pool for this process's dispatchers, whatever number of campaigns they send.
        pool = BuildPool(processes) if processes else None
        config = DispatchConfig(
            base_url=settings.http.base_url, owner=f"{settings.server.hostname}:{os.getpid()}",
            batch_size=m.dispatch_batch, lease_seconds=m.dispatch_lease_seconds,
            guardrails=GuardrailPolicy(min_sample=m.guardrail_min_sample,
                                       max_hard_bounce_rate=m.max_hard_bounce_rate,
                                       max_complaint_rate=m.max_complaint_rate),
            build_processes=processes)
        return CampaignRunner(
            store, lambda: Dispatcher(store, dkim, tokens, config, clock=clock, on_queued=wake,
                                      builders=pool),
            clock=clock, poll_seconds=m.dispatch_poll_seconds,
            on_stop=pool.close if pool is not None else None)

    return build


async def _run_campaigns(server: Server, make_runner: Callable[[], CampaignRunner]) -> None:
    """The campaign task: builds the runner (see _campaign_runner), then runs it."""
    try:
        server.campaigns = make_runner()
    except Exception:
        log.exception("campaigns: the runner could not be built; this process sends none")
        raise
    await server.campaigns.run()


def _write_ready(settings: Settings, ports: dict[str, int]) -> None:
    run_dir = settings.data_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f"ready.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports}))
    tmp.replace(run_dir / "ready.json")


def _remove_ready(settings: Settings) -> None:
    """Removes ready.json if this process wrote it last: a stale file would tell scripts that a
    stopped server is up."""
    path = settings.data_path / "run" / "ready.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


async def serve_forever(settings: Settings, *, reuse_port: bool,
                        on_ready: Callable[[Server], None] | None = None,
                        write_ready: bool = True) -> int:
    server = await start_server(settings, reuse_port=reuse_port)
    heap.settle()  # start-up done: the collector leaves what lives as long as we do alone
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if write_ready:
        _write_ready(settings, server.ports)
    if on_ready is not None:
        on_ready(server)
    log.info("ready: pid=%d, ports=%s", os.getpid(), server.ports)
    await stop.wait()
    log.info("shutting down: draining sessions and deliveries")
    await server.stop(grace=10.0)
    if write_ready:
        _remove_ready(settings)
    log.info("stopped")
    return 0


def loop_runner() -> Any:
    """uvloop.run where uvloop is installed (an optional speed-up), else asyncio.run: what a
    server process runs on (the campaign bench runs its dispatcher on the same)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run_process(settings: Settings, reuse_port: bool,
                 ready: multiprocessing.queues.Queue[dict[str, int]] | None = None) -> int:
    setup_logging(settings.log.format, settings.log.level, settings.log.file)
    runner = loop_runner()
    on_ready = (lambda server: ready.put(server.ports)) if ready is not None else None
    return int(runner(serve_forever(settings, reuse_port=reuse_port, on_ready=on_ready,
                                    write_ready=ready is None)))


def _child(settings: Settings, ready: multiprocessing.queues.Queue[dict[str, int]]) -> None:
    raise SystemExit(_run_process(settings, reuse_port=True, ready=ready))


def _await_workers(procs: list[multiprocessing.process.BaseProcess],
                   ready: multiprocessing.queues.Queue[dict[str, int]]) -> dict[str, int] | None:
    """The ports once every worker has bound its listeners (each reports on `ready`); None if a
    worker died first. Until then ready.json is not written: a client told "up" while only some
    workers listen would have all its connections on those (SO_REUSEPORT spreads only over the
    sockets bound at connect time)."""
    ports: dict[str, int] = {}
    waiting = len(procs)
    while waiting:
        try:
            ports = ready.get(timeout=0.5)
            waiting -= 1
        except queue.Empty:
            if any(not p.is_alive() for p in procs):
                return None
    return ports


def run_server(settings: Settings) -> int:
    """Runs the server in this process, or `workers` processes sharing the ports."""
    workers = settings.server.workers or os.cpu_count() or 1
    if workers <= 1:
        return _run_process(settings, reuse_port=False)
    setup_logging(settings.log.format, settings.log.level, settings.log.file)
    ctx = multiprocessing.get_context("spawn")
    ready: multiprocessing.queues.Queue[dict[str, int]] = ctx.Queue()
    # Node-wide housekeeping (retention) runs in the first worker only.
    quiet = dataclasses.replace(settings, marketing=dataclasses.replace(
        settings.marketing, retention_interval_hours=0.0))
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=_child, args=(settings if i == 0 else quiet, ready),
                    name=f"mailprime-{i}")
        for i in range(workers)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    ports = _await_workers(procs, ready)
    if ports is not None:
        _write_ready(settings, ports)
        log.info("ready: %d workers, ports=%s", workers, ports)
    codes = []
    for p in procs:
        p.join()
        codes.append(p.exitcode or 0)
    _remove_ready(settings)
    return max(codes)
