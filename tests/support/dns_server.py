"""A real DNS server on 127.0.0.1 (UDP and TCP on one ephemeral port) for tests.

Theory of operation. One background thread runs a selector loop over the UDP socket, the TCP
listening socket, accepted TCP connections and a wake-up socketpair. Each query is parsed with
dnslib and answered from a `Zone` that tests edit at run time (under a lock). The zone answers
authoritatively for every name:

* a name with records answers them; a CNAME is followed within the zone (at most 8 hops) unless
  `follow_cnames` is off, in which case only the CNAME is returned (as a server that is not
  authoritative for the target would), so the client must chase it;
* a name with records of other types answers NOERROR with no records (NODATA);
* any other name answers NXDOMAIN;
* `servfail(name)` / `refuse(name)` answer SERVFAIL / REFUSED, `drop(name)` never answers (to make
  the client time out);
* negative answers carry an SOA with `negative_ttl` when that is set (RFC 2308), none otherwise.

UDP answers larger than 512 octets (RFC 1035 4.2.1; or the EDNS size the client offers) are sent
truncated with TC set, so clients retry over TCP. TCP framing is RFC 1035 4.2.2 (two-octet length).
Limits: 16 TCP clients at once, one message of at most 65535 octets each, 100 000 queries per
server; `stop()` wakes the loop, closes every socket and joins the thread.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

import pytest
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSHeader, DNSRecord

UDP_LIMIT = 512  # RFC 1035 4.2.1, without EDNS
MAX_TCP_CLIENTS = 16
MAX_TCP_MESSAGE = 65535  # RFC 1035 4.2.2: two-octet length prefix
MAX_QUERIES = 100_000
MAX_CHAIN = 8


@dataclass(frozen=True, slots=True)
class Record:
    rtype: str  # "A", "AAAA", "MX", "TXT", "CNAME", "PTR"
    ttl: int
    value: object  # dnslib rdata
    target: str = ""  # for CNAME: the name it points to


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    qtype: str
    transport: str  # "udp" or "tcp"


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass
class Zone:
    """The data the server answers from. Every method is safe to call while the server runs."""

    follow_cnames: bool = True
    negative_ttl: int | None = None  # SOA MINIMUM in negative answers; None: no SOA
    _records: dict[str, list[Record]] = field(default_factory=dict)
    _failures: dict[str, str] = field(default_factory=dict)  # name -> "SERVFAIL"/"REFUSED"/"DROP"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, name: str, record: Record) -> None:
        with self._lock:
            self._records.setdefault(_norm(name), []).append(record)

    def add_a(self, name: str, ip: str, ttl: int = 300) -> None:
        self._add(name, Record("A", ttl, A(ip)))

    def add_aaaa(self, name: str, ip: str, ttl: int = 300) -> None:
        self._add(name, Record("AAAA", ttl, AAAA(ip)))

    def add_mx(self, name: str, preference: int, exchange: str, ttl: int = 300) -> None:
        """`exchange` "." makes a null MX (RFC 7505)."""
        self._add(name, Record("MX", ttl, MX(exchange, preference)))

    def add_null_mx(self, name: str, ttl: int = 300) -> None:
        self.add_mx(name, 0, ".", ttl)

    def add_txt(self, name: str, text: str | list[bytes], ttl: int = 300) -> None:
        """A str longer than 255 octets is split into 255-octet strings, as DKIM keys are."""
        if isinstance(text, str):
            raw = text.encode()
            strings = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        else:
            strings = text
        self._add(name, Record("TXT", ttl, TXT(strings)))

    def add_cname(self, name: str, target: str, ttl: int = 300) -> None:
        self._add(name, Record("CNAME", ttl, CNAME(target), _norm(target)))

    def add_ptr(self, ip: str, host: str, ttl: int = 300) -> None:
        self._add(ipaddress.ip_address(ip).reverse_pointer, Record("PTR", ttl, PTR(host)))

    def remove(self, name: str, rtype: str | None = None) -> None:
        with self._lock:
            key = _norm(name)
            if rtype is None:
                self._records.pop(key, None)
            else:
                kept = [r for r in self._records.get(key, []) if r.rtype != rtype]
                if kept:
                    self._records[key] = kept
                else:
                    self._records.pop(key, None)

    def servfail(self, name: str) -> None:
        self._fail(name, "SERVFAIL")

    def refuse(self, name: str) -> None:
        self._fail(name, "REFUSED")

    def drop(self, name: str) -> None:
        self._fail(name, "DROP")

    def heal(self, name: str) -> None:
        with self._lock:
            self._failures.pop(_norm(name), None)

    def _fail(self, name: str, how: str) -> None:
        with self._lock:
            self._failures[_norm(name)] = how

    def answer(self, query: DNSRecord) -> DNSRecord | None:
        """The reply to `query`, or None to stay silent."""
        reply = query.reply(ra=1, aa=1)
        if len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply
        qname = _norm(str(query.q.qname))
        qtype = QTYPE.get(query.q.qtype)
        with self._lock:
            failure = self._failures.get(qname)
            if failure == "DROP":
                return None
            if failure is not None:
                reply.header.rcode = getattr(RCODE, failure)
                return reply
            current = qname
            for _hop in range(MAX_CHAIN):
                records = self._records.get(current)
                if records is None:
                    # RFC 6604 3: the RCODE speaks of the last name of the chain.
                    reply.header.rcode = RCODE.NXDOMAIN
                    return self._with_soa(reply, current)
                matching = [r for r in records if r.rtype == qtype]
                if matching:
                    reply.add_answer(*(RR(current, getattr(QTYPE, r.rtype), ttl=r.ttl, rdata=r.value)
                                       for r in matching))
                    return reply
                cname = next((r for r in records if r.rtype == "CNAME"), None)
                if cname is None or qtype == "CNAME":
                    return self._with_soa(reply, current)  # NODATA
                reply.add_answer(RR(current, QTYPE.CNAME, ttl=cname.ttl, rdata=cname.value))
                current = cname.target
                if not self.follow_cnames:
                    return reply  # the client must ask for the target itself
            reply.header.rcode = RCODE.SERVFAIL  # chain too long (or a loop)
            return reply

    def _with_soa(self, reply: DNSRecord, name: str) -> DNSRecord:
        """Adds the SOA that makes a negative answer cacheable (RFC 2308 3), if configured."""
        if self.negative_ttl is not None:
            labels = name.split(".")
            apex = ".".join(labels[-2:]) if len(labels) >= 2 else name
            soa = SOA(f"ns.{apex}", f"hostmaster.{apex}", (1, 3600, 600, 86400, self.negative_ttl))
            reply.add_auth(RR(apex, QTYPE.SOA, ttl=self.negative_ttl, rdata=soa))
        return reply


class DnsTestServer:
    """`with DnsTestServer() as dns: dns.zone.add_a(...); DnsResolver([dns.address], 1.0)`."""

    def __init__(self, zone: Zone | None = None, host: str = "127.0.0.1") -> None:
        self.zone = zone if zone is not None else Zone()
        self.host = host
        self.port = 0
        self._queries: list[Query] = []
        self._queries_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.errors: list[BaseException] = []

    @property
    def address(self) -> str:
        """"ip:port", the form `DnsResolver` and the settings take."""
        return f"{self.host}:{self.port}"

    @property
    def queries(self) -> list[Query]:
        with self._queries_lock:
            return list(self._queries)

    def clear_queries(self) -> None:
        with self._queries_lock:
            self._queries.clear()

    # Life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        # UDP and TCP on the same port: bind UDP to an ephemeral port, then TCP to that port.
        # Another process may hold the TCP side of it, so try a few ports.
        for _attempt in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(MAX_TCP_CLIENTS)
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        udp.setblocking(False)
        tcp.setblocking(False)
        self._udp, self._tcp, self.port = udp, tcp, port
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"dns-test-{port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        assert self._wake_w is not None
        self._wake_w.send(b"x")
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("DNS test server thread did not stop")
        self._thread = None
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self.errors:
            raise RuntimeError(f"DNS test server failed: {self.errors[0]!r}") from self.errors[0]

    def __enter__(self) -> DnsTestServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # The loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake_r is not None
        clients: dict[socket.socket, bytearray] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "listen")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            try:
                while not self._stopping.is_set() and len(self._queries) < MAX_QUERIES:
                    for key, _mask in sel.select():
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if key.data == "wake":
                            return
                        if key.data == "udp":
                            self._serve_udp(sock)
                        elif key.data == "listen":
                            self._accept(sock, sel, clients)
                        else:
                            self._serve_tcp(sock, sel, clients)
            except Exception as exc:  # surfaced by stop(), never lost in the thread
                self.errors.append(exc)
            finally:
                for client in clients:
                    sel.unregister(client)
                    client.close()

    def _serve_udp(self, sock: socket.socket) -> None:
        try:
            data, peer = sock.recvfrom(MAX_TCP_MESSAGE)
        except BlockingIOError:
            return
        reply = self._handle(data, "udp")
        if reply is None:
            return
        wire = reply.pack()
        limit = UDP_LIMIT
        query = DNSRecord.parse(data)
        for extra in query.ar:
            if extra.rtype == QTYPE.OPT:  # EDNS0 (RFC 6891 6.2.3): the client's buffer size
                limit = max(UDP_LIMIT, min(int(extra.rclass), MAX_TCP_MESSAGE))
        if len(wire) > limit:
            truncated = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, qr=1,
                                            aa=1, ra=1, tc=1), q=reply.q)
            wire = truncated.pack()
        sock.sendto(wire, peer)

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector,
                clients: dict[socket.socket, bytearray]) -> None:
        try:
            conn, _peer = listener.accept()
        except BlockingIOError:
            return
        if len(clients) >= MAX_TCP_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        clients[conn] = bytearray()
        sel.register(conn, selectors.EVENT_READ, "client")

    def _serve_tcp(self, conn: socket.socket, sel: selectors.BaseSelector,
                   clients: dict[socket.socket, bytearray]) -> None:
        try:
            chunk = conn.recv(MAX_TCP_MESSAGE + 2)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf = clients[conn]
        buf += chunk
        close = not chunk
        while len(buf) >= 2 and not close:
            (length,) = struct.unpack("!H", buf[:2])
            if len(buf) < 2 + length:
                break
            message = bytes(buf[2:2 + length])
            del buf[:2 + length]
            reply = self._handle(message, "tcp")
            if reply is None:
                continue
            wire = reply.pack()
            conn.settimeout(5)  # a blocking send with a bound, then back to non-blocking
            try:
                conn.sendall(struct.pack("!H", len(wire)) + wire)
            except OSError:
                close = True
            conn.setblocking(False)
        if len(buf) > MAX_TCP_MESSAGE + 2:
            close = True
        if close:
            sel.unregister(conn)
            del clients[conn]
            conn.close()

    def _handle(self, data: bytes, transport: str) -> DNSRecord | None:
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types for garbage: ignore the packet
            return None
        if query.questions:
            with self._queries_lock:
                self._queries.append(Query(_norm(str(query.q.qname)), str(QTYPE.get(query.q.qtype)),
                                           transport))
        return self.zone.answer(query)


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A running DnsTestServer with an empty zone; stopped after the test."""
    with DnsTestServer() as server:
        yield server
