"""One IMAP connection's session: the use-case side of `net.imap_handler.ImapSession`.

Theory of operation. The driver (net.imap_server) owns the socket and the protocol core; it
hands every event to `respond`, an async generator of responses, and writes each response as
it comes (so a FETCH of many messages streams, and a streamed literal's blob is still open
while the driver copies it). The session never touches the core: the driver reads what the
session decided from what it yields and from two properties:
  * `state` (NOT_AUTHENTICATED -> AUTHENTICATED <-> SELECTED -> LOGOUT, RFC 9051 3) and `utf8`
    are copied into the core after each event;
  * a Continuation answers APPEND (accept the literal), AUTHENTICATE (a SASL challenge) and
    IDLE ("+ idling"); a Tagged answer to APPEND refuses its literal; a tagged OK to STARTTLS
    starts the handshake.
Every command ends with exactly one tagged response. Before it, a session with a selected
mailbox catches up with storage (`MailboxView.sync`) and reports what other sessions changed,
holding EXPUNGEs back during FETCH, STORE and SEARCH (RFC 3501 7.4.1). While IDLE, the driver
waits on `wait_for_change` and writes `idle_updates`. Failures never drop the connection: a
refusal is a tagged NO/BAD, a storage error NO [UNAVAILABLE], a bug NO [SERVERBUG] (logged with
its traceback), and the session then takes the next command as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from mailprime import __version__
from mailprime.domain.errors import AlreadyExists, DomainError, NotFound, StorageError
from mailprime.domain.ids import AccountId, new_queue_id
from mailprime.logline import emit
from mailprime.proto.imap.types import (
    Append,
    AppendData,
    AppendEnd,
    Atom,
    Authenticate,
    AuthenticateData,
    BadCommand,
    Capability,
    Check,
    Close,
    Command,
    CommandReceived,
    Continuation,
    Copy,
    Create,
    Delete,
    Enable,
    Event,
    Examine,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    IdleDone,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    ParenList,
    ProtocolViolation,
    Rename,
    Response,
    ResponseCode,
    ResponseStatus,
    Search,
    Select,
    SetQuota,
    StartTls,
    State,
    Status,
    Store,
    String,
    Subscribe,
    Tagged,
    UidExpunge,
    Unselect,
    Unsubscribe,
    Untagged,
    UntaggedStatus,
    Value,
    bad,
    bye,
    capability_response,
    no,
    ok,
)
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.imap import append, mailbox_commands, message_commands
from mailprime.services.imap.auth import plain_credentials
from mailprime.services.imap.capabilities import CapabilityPolicy
from mailprime.services.imap.context import CommandFailed, Resources, Responses, SessionContext
from mailprime.services.imap.view import MailboxGone
from mailprime.services.mail_auth import check_login

log = logging.getLogger("mailprime.imapd")

# Extensions ENABLE can turn on (RFC 5161): the names as the ENABLED response spells them.
_ENABLEABLE = {"CONDSTORE": "CONDSTORE", "IMAP4REV2": "IMAP4rev2"}


def _holds_expunges(command: Command) -> bool:
    """RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (their UID forms are
    exempt: UIDs do not shift)."""
    return isinstance(command, Fetch | Store | Search) and not command.uid


class ImapSession:
    def __init__(self, res: Resources, policy: CapabilityPolicy, peer: PeerInfo, tls: bool) -> None:
        self._ctx = SessionContext(res)
        self._policy = policy
        self.peer = peer
        self.tls = tls
        self._logout = False
        self._append: append.AppendInProgress | None = None
        self._auth_tag: str | None = None  # AUTHENTICATE waiting for the client's response
        self._failures = 0
        self._held: AccountId | None = None  # the slot taken in the per-account registry
        self._client_id = ""
        self.session_id = new_queue_id()
        self.started = time.monotonic()
        self.commands = 0

    # What the driver reads --------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self._logout:
            return State.LOGOUT
        if self._ctx.account is None:
            return State.NOT_AUTHENTICATED
        return State.AUTHENTICATED if self._ctx.view is None else State.SELECTED

    @property
    def utf8(self) -> bool:
        return self._ctx.utf8

    def _capabilities(self) -> tuple[str, ...]:
        return self._policy.capabilities(authenticated=self._ctx.account is not None, tls=self.tls)

    async def greeting(self) -> UntaggedStatus:
        # RFC 9051 7.1: the greeting may carry the capabilities, saving a round trip.
        return UntaggedStatus(ResponseStatus.OK, f"{self._ctx.config.hostname} IMAP server ready",
                              ResponseCode("CAPABILITY", _atoms(self._capabilities())))

    async def on_tls(self) -> None:
        self.tls = True

    async def on_close(self, received: int, sent: int) -> None:
        if self._append is not None:
            await append.abort(self._append)  # a message cut off mid-literal leaves nothing
            self._append = None
        if self._held is not None:
            self._ctx.res.sessions.release(self._held)
            self._held = None
        account = self._ctx.account
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             tls="yes" if self.tls else "no", user=account.address if account else None,
             client_id=self._client_id or None, commands=self.commands, in_bytes=received,
             out_bytes=sent, login_failures=self._failures or None,
             duration_s=round(time.monotonic() - self.started, 3), status="disconnect")

    # Events -----------------------------------------------------------------------------------

    async def respond(self, event: Event) -> AsyncIterator[Response]:
        """The responses to one event from the core, in order."""
        match event:
            case CommandReceived(tag=tag, command=command):
                self.commands += 1
                async for response in self._guarded(tag, self._command(tag, command), command):
                    yield response
            case AppendData(data=data):
                if self._append is not None:
                    await append.write(self._append, data)
            case AppendEnd(tag=tag):
                async for response in self._guarded(tag, self._append_end(tag), None):
                    yield response
            case AuthenticateData(data=data):
                tag = self._auth_tag or "*"
                async for response in self._guarded(tag, self._authenticate_response(tag, data), None):
                    yield response
            case IdleDone(tag=tag):
                async for response in self._guarded(tag, self._ok(tag, "IDLE terminated"), None):
                    yield response
            case BadCommand():
                self._auth_tag = None  # a bad SASL line ends the exchange
                yield event.response()
            case ProtocolViolation(text=text):
                self._logout = True
                yield bye(text)
            case _:  # LiteralRequest (the driver accepts those), ConnectionClosed
                pass

    async def _guarded(self, tag: str, responses: Responses, command: Command | None) -> Responses:
        """Runs a handler; adds the selected mailbox's updates before its tagged response, and
        turns failures into a tagged answer (never an exception out of the session)."""
        answered = False
        try:
            async for response in responses:
                if isinstance(response, Tagged) and not answered:
                    answered = True
                    for update in await self._updates(command):
                        yield update
                yield response
        except CommandFailed as exc:
            if not answered:
                for update in await self._updates(command):
                    yield update
                yield exc.response(tag)
        except MailboxGone:
            self._ctx.view = None
            self._logout = True
            yield bye("The selected mailbox was deleted")
            if not answered:
                yield no(tag, "The selected mailbox was deleted", ResponseCode("NONEXISTENT"))
        except NotFound as exc:
            if not answered:
                yield no(tag, exc.message, ResponseCode("NONEXISTENT"))
        except AlreadyExists as exc:
            if not answered:
                yield no(tag, exc.message, ResponseCode("ALREADYEXISTS"))
        except StorageError as exc:  # the store failed; nothing was committed (RFC 5530 UNAVAILABLE)
            emit(log, self.session_id, logging.ERROR, status="storage error", reason=exc.message)
            if not answered:
                yield no(tag, "Storage temporarily unavailable; try again later", ResponseCode("UNAVAILABLE"))
        except DomainError as exc:  # refused on purpose by a layer below; its text is for the peer
            emit(log, self.session_id, logging.WARNING, status="refused", reason=exc.message)
            if not answered:
                yield no(tag, exc.message)
        except Exception:  # a bug, or the process failing (RFC 5530 SERVERBUG); the session goes on
            log.exception("imap session %s: command failed", self.session_id)
            if not answered:
                yield no(tag, f"Internal server error (logged as session {self.session_id});"
                              " try again later", ResponseCode("SERVERBUG"))

    async def _updates(self, command: Command | None) -> list[Response]:
        """The selected mailbox's changes to report now (see the module docstring). The command
        itself is done: a failure here costs the updates (sent with a later command), never
        the command's answer."""
        view = self._ctx.view
        if view is None or self._logout or isinstance(command, Select | Examine | Close | Unselect):
            return []
        if isinstance(command, Append | Authenticate | Idle):
            return []  # these answer with a continuation, or refuse before anything happened
        allow = command is None or not _holds_expunges(command)
        try:
            return await view.sync(self._ctx.store, self._ctx.sync_options(allow_expunge=allow))
        except MailboxGone:
            self._ctx.view = None
            self._logout = True
            return [bye("The selected mailbox was deleted")]
        except DomainError as exc:
            emit(log, self.session_id, logging.ERROR, status="storage error", reason=exc.message)
            return []

    # Dispatch ---------------------------------------------------------------------------------

    def _command(self, tag: str, command: Command) -> Responses:
        ctx = self._ctx
        match command:
            case Capability():
                return self._capability(tag)
            case Noop() | Check():
                return self._ok(tag, f"{type(command).__name__.upper()} completed")
            case Logout():
                return self._logout_command(tag)
            case Id():
                return self._id(tag, command)
            case StartTls():
                return self._starttls(tag)
            case Login():
                return self._login(tag, command.userid, command.password)
            case Authenticate():
                return self._authenticate(tag, command)
            case Enable():
                return self._enable(tag, command)
            case Select():
                return mailbox_commands.select(ctx, tag, command.mailbox, read_only=False,
                                               condstore=command.condstore)
            case Examine():
                return mailbox_commands.select(ctx, tag, command.mailbox, read_only=True,
                                               condstore=command.condstore)
            case Create():
                return mailbox_commands.create(ctx, tag, command)
            case Delete():
                return mailbox_commands.delete(ctx, tag, command)
            case Rename():
                return mailbox_commands.rename(ctx, tag, command)
            case Subscribe():
                return mailbox_commands.subscribe(ctx, tag, command.mailbox, True)
            case Unsubscribe():
                return mailbox_commands.subscribe(ctx, tag, command.mailbox, False)
            case List():
                return mailbox_commands.list_mailboxes(ctx, tag, command)
            case Lsub():
                return mailbox_commands.lsub(ctx, tag, command)
            case Namespace():
                return mailbox_commands.namespace(ctx, tag)
            case Status():
                return mailbox_commands.status(ctx, tag, command)
            case GetQuota():
                return mailbox_commands.get_quota(ctx, tag, command)
            case GetQuotaRoot():
                return mailbox_commands.get_quota_root(ctx, tag, command)
            case SetQuota():
                return mailbox_commands.set_quota(ctx, tag)
            case Append():
                return self._append_begin(tag, command)
            case Idle():
                return self._idle(tag)
            case Close():
                return self._close(tag, expunge=True)
            case Unselect():
                return self._close(tag, expunge=False)
            case Expunge():
                return message_commands.expunge(ctx, tag)
            case UidExpunge():
                return message_commands.uid_expunge(ctx, tag, command)
            case Search():
                return message_commands.search_command(ctx, tag, command)
            case Fetch():
                return message_commands.fetch(ctx, tag, command)
            case Store():
                return message_commands.store(ctx, tag, command)
            case Copy():
                return message_commands.copy(ctx, tag, command)
            case Move():
                return message_commands.move(ctx, tag, command)
        return self._refuse(tag, "Command not implemented")  # pragma: no cover - exhaustive

    # Any state --------------------------------------------------------------------------------

    async def _ok(self, tag: str, text: str) -> Responses:
        yield ok(tag, text)

    async def _refuse(self, tag: str, text: str) -> Responses:
        yield bad(tag, text)

    async def _capability(self, tag: str) -> Responses:
        yield capability_response(self._capabilities())
        yield ok(tag, "CAPABILITY completed")

    async def _logout_command(self, tag: str) -> Responses:
        self._logout = True
        yield bye("Logging out")
        yield ok(tag, "LOGOUT completed")

    async def _id(self, tag: str, command: Id) -> Responses:
        """RFC 2971: note the client's name for the log line; tell ours."""
        if command.parameters:
            fields = {k.lower(): v for k, v in command.parameters}
            self._client_id = " ".join(v for v in (fields.get("name"), fields.get("version")) if v)[:100]
        yield Untagged((Atom("ID"), ParenList((String("name"), String("mailprime"),
                                                String("version"), String(__version__)))))
        yield ok(tag, "ID completed")

    # Not authenticated ------------------------------------------------------------------------

    async def _starttls(self, tag: str) -> Responses:
        if self.tls:
            yield bad(tag, "TLS is already active")
        elif not self._policy.starttls_offered:
            yield bad(tag, "STARTTLS is not available on this port")
        else:
            yield ok(tag, "Begin TLS negotiation now")  # the driver starts the handshake

    def _login_refusal(self, tag: str) -> Tagged | None:
        if not self._policy.login_allowed(self.tls):
            # RFC 9051 6.2.3 / RFC 5530: LOGINDISABLED was advertised; no password in the clear.
            return no(tag, "Log in after STARTTLS", ResponseCode("PRIVACYREQUIRED"))
        return None

    async def _login(self, tag: str, userid: str, password: str) -> Responses:
        refusal = self._login_refusal(tag)
        if refusal is not None:
            yield refusal
            return
        async for response in self._finish_login(tag, "", userid, password, "LOGIN"):
            yield response

    async def _authenticate(self, tag: str, command: Authenticate) -> Responses:
        refusal = self._login_refusal(tag)
        if refusal is not None:
            yield refusal
            return
        if command.mechanism != "PLAIN":
            yield no(tag, "Unsupported authentication mechanism", ResponseCode("CANNOT"))
            return
        if command.initial_response is None:
            self._auth_tag = tag
            yield Continuation(data=b"")  # RFC 4616: PLAIN starts with an empty challenge
            return
        async for response in self._authenticate_response(tag, command.initial_response):
            yield response

    async def _authenticate_response(self, tag: str, data: bytes | None) -> Responses:
        self._auth_tag = None
        if data is None:  # RFC 3501 6.2.2: "*" cancels, answered with BAD
            yield bad(tag, "Authentication cancelled")
            return
        credentials = plain_credentials(data)
        if credentials is None:
            async for response in self._failed_login(tag, "AUTHENTICATE PLAIN", "", "malformed"):
                yield response
            return
        async for response in self._finish_login(tag, credentials.authzid, credentials.authcid,
                                                 credentials.password, "AUTHENTICATE PLAIN"):
            yield response

    async def _finish_login(self, tag: str, authzid: str, userid: str, password: str,
                            method: str) -> Responses:
        res = self._ctx.res
        check = await check_login(res.directory, authzid, userid, password, cache=res.logins)
        account = check.account
        if account is None:
            why = check.failure.value if check.failure is not None else "failed"
            async for response in self._failed_login(tag, method, userid, why):
                yield response
            return
        if not res.sessions.acquire(account.id):
            emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
                 method=method, user=account.address, result="too many sessions")
            yield no(tag, "Too many sessions for this account", ResponseCode("LIMIT"))
            return
        self._held = account.id
        self._ctx.account = account
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             method=method, user=account.address, result="ok")
        yield ok(tag, "Logged in", ResponseCode("CAPABILITY", _atoms(self._capabilities())))

    async def _failed_login(self, tag: str, method: str, userid: str, why: str) -> Responses:
        self._failures += 1
        policy = self._ctx.config.failures
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             method=method, user=userid or None, result=why, failures=self._failures)
        delay = policy.delay(self._failures)
        if delay:
            await asyncio.sleep(delay)  # slows password guessing (RFC 9051 6.2.3)
        yield no(tag, "Authentication failed", ResponseCode("AUTHENTICATIONFAILED"))
        if self._failures >= policy.max_failures:
            self._logout = True
            yield bye("Too many failed logins")

    # Authenticated ----------------------------------------------------------------------------

    async def _enable(self, tag: str, command: Enable) -> Responses:
        ctx = self._ctx
        enabled = []
        for name in command.capabilities:
            canonical = _ENABLEABLE.get(name.upper())
            if canonical == "CONDSTORE" and not ctx.condstore:
                ctx.condstore = True
                enabled.append(canonical)
            elif canonical == "IMAP4rev2" and not ctx.rev2:
                ctx.rev2 = ctx.utf8 = True  # RFC 9051 6.3.1: names are UTF-8 from now on
                enabled.append(canonical)
        yield Untagged((Atom("ENABLED"), *(Atom(n) for n in enabled)))
        yield ok(tag, "ENABLE completed")

    async def _append_begin(self, tag: str, command: Append) -> Responses:
        answer, progress = await append.begin(self._ctx, tag, command)
        self._append = progress
        yield answer

    async def _append_end(self, tag: str) -> Responses:
        progress, self._append = self._append, None
        if progress is None:  # pragma: no cover - the core sends AppendEnd only after accept
            yield bad(tag, "No APPEND in progress")
            return
        yield await append.finish(self._ctx, progress)

    async def _idle(self, tag: str) -> Responses:
        """RFC 2177: "+ idling", then updates as they happen until DONE (see the driver)."""
        yield Continuation("idling")
        view = self._ctx.view
        if view is not None:
            for update in await view.sync(self._ctx.store, self._ctx.sync_options(allow_expunge=True)):
                yield update

    async def wait_for_change(self) -> None:
        """Returns when the selected mailbox changed (or may have): the driver then writes
        `idle_updates`. Changes in this process wake it at once (storage's wake-ups); other
        processes' changes are noticed within `idle_poll` seconds. With nothing selected,
        there is nothing to report and this waits until the driver cancels it."""
        view = self._ctx.view
        if view is None:
            await asyncio.Event().wait()
            return
        poll = self._ctx.config.idle_poll
        while True:
            try:
                current = await self._ctx.store.wait_for_change(view.mailbox.id, view.known_modseq, poll)
            except NotFound:
                return  # deleted: idle_updates says BYE
            except DomainError:
                await asyncio.sleep(poll)  # storage hiccup: try again, never spin
                continue
            if current > view.known_modseq:
                return

    async def idle_updates(self) -> AsyncIterator[Response]:
        view = self._ctx.view
        if view is None:
            return
        try:
            for update in await view.sync(self._ctx.store, self._ctx.sync_options(allow_expunge=True)):
                yield update
        except MailboxGone:
            self._ctx.view = None
            self._logout = True
            yield bye("The selected mailbox was deleted")
        except DomainError as exc:
            emit(log, self.session_id, logging.ERROR, status="storage error", reason=exc.message)

    # Selected ---------------------------------------------------------------------------------

    async def _close(self, tag: str, *, expunge: bool) -> Responses:
        view = self._ctx.require_view()
        self._ctx.view = None
        if expunge and not view.read_only:
            # RFC 3501 6.4.2: CLOSE expunges silently (no EXPUNGE responses); UNSELECT does not.
            await self._ctx.store.expunge(view.mailbox.id)
        yield ok(tag, "CLOSE completed" if expunge else "UNSELECT completed")

    # Helpers ----------------------------------------------------------------------------------

    def _client(self) -> str:
        return f"[{self.peer.ip}]:{self.peer.port}"


def _atoms(names: tuple[str, ...]) -> tuple[Value, ...]:
    return tuple(Atom(n) for n in names)
