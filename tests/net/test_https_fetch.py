"""net.https_fetch against a real HTTPS server (trustme certificate) and the loopback DNS server:
what an MTA-STS policy fetch accepts and refuses (RFC 8461 3.3)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from mailprime.net.dns import DnsResolver
from mailprime.net.https_fetch import HttpsFetcher, HttpsFetchError
from mailprime.net.tls import client_context
from tests.support.dns_server import DnsTestServer
from tests.support.https_server import HttpsTestServer, https_server, text_response
from tests.support.instance import refusing_port

HOST = "mta-sts.example.test"
PATH = "/.well-known/mta-sts.txt"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = client_context(verify=True)
    ca.configure_trust(ctx)
    return ctx


def run(ca: trustme.CA, dns: DnsTestServer,
        body: Callable[[HttpsTestServer, Callable[..., HttpsFetcher]], Awaitable[None]],
        names: tuple[str, ...] = (HOST,)) -> None:
    dns.zone.add_a(HOST, "127.0.0.1")

    async def scenario() -> None:
        async with https_server(ca, *names) as server:
            def fetcher(**kwargs: object) -> HttpsFetcher:
                options: dict[str, object] = {"port": server.port, "timeout": 5.0,
                                              "ssl_context": trusting(ca)}
                options.update(kwargs)
                return HttpsFetcher(DnsResolver([dns.address], timeout=2.0),
                                    **options)  # type: ignore[arg-type]
            await body(server, fetcher)

    asyncio.run(scenario())


async def failure(fetcher: HttpsFetcher, host: str = HOST) -> HttpsFetchError:
    with pytest.raises(HttpsFetchError) as info:
        await fetcher.get(host, PATH)
    return info.value


def test_fetches_a_text_plain_body(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_text(PATH, POLICY, content_type="text/plain; charset=utf-8")
        assert await fetcher().get(HOST, PATH) == POLICY.encode()
        assert server.requests == [(f"{HOST}:{server.port}", PATH)]
    run(ca, dns_server, body)


def test_chunked_body_is_joined(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n")
        assert await fetcher().get(HOST, PATH) == b"hello, world"
    run(ca, dns_server, body)


def test_body_until_close_without_framing(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length")
        assert await fetcher().get(HOST, PATH) == b"no length"
    run(ca, dns_server, body)


def test_redirect_is_not_followed(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere.test/p\r\n"
                               b"Content-Length: 0\r\n\r\n")
        server.serve_text("/p", POLICY)
        exc = await failure(fetcher())
        assert "HTTP 301 (to https://elsewhere.test/p)" in exc.reason and not exc.tls
        assert [p for _h, p in server.requests] == [PATH]  # RFC 8461 3.3: MUST NOT follow
    run(ca, dns_server, body)


def test_not_found_and_wrong_media_type_fail(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        assert "HTTP 404" in (await failure(fetcher())).reason
        server.serve_text(PATH, "<html>", content_type="text/html")
        assert "media type 'text/html', not text/plain" in (await failure(fetcher())).reason
    run(ca, dns_server, body)


def test_size_limit_whatever_the_framing(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        small = fetcher(max_size=100)
        server.serve_text(PATH, "x" * 101)
        assert "body of 101 octets exceeds 100" in (await failure(small)).reason
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 101)
        assert "body exceeds 100 octets" in (await failure(small)).reason
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               b"40\r\n" + b"z" * 64 + b"\r\n40\r\n" + b"z" * 64 + b"\r\n0\r\n\r\n")
        assert "body exceeds 100 octets" in (await failure(small)).reason
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nX-Long: " + b"h" * 9000 + b"\r\n\r\n")
        assert "header line longer than 8192" in (await failure(small)).reason
    run(ca, dns_server, body)


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("size", [b"-1", b"+5", b"0x5", b"5_0", b" ", b"5 5", b"\xb2",
                                  b"0" * 16 + b"5"])
def test_a_chunk_size_is_hex_digits_only(ca: trustme.CA, dns_server: DnsTestServer,
                                         size: bytes) -> None:
    """int(x, 16) takes all of these ("-1" then made readexactly raise ValueError, which no
    caller expected); RFC 9112 7.1 says 1*HEXDIG, and 16 digits are the limit here."""
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, CHUNKED + size + b"\r\nhello\r\n0\r\n\r\n")
        assert "bad chunk size" in (await failure(fetcher())).reason
    run(ca, dns_server, body)


def test_chunk_sizes_with_leading_zeros_upper_case_and_extensions(
        ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, CHUNKED + b"0" * 15 + b"5\r\nhello\r\n"
                               b"A ; name=value\r\n, world!!!\r\n0\r\n\r\n")
        assert await fetcher().get(HOST, PATH) == b"hello, world!!!"
    run(ca, dns_server, body)


@pytest.mark.parametrize("length", [b"-1", b"+5", b"\xb2", b"5, 5", b"1" * 17])
def test_a_content_length_is_decimal_digits_only(ca: trustme.CA, dns_server: DnsTestServer,
                                                 length: bytes) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_raw(PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               b"Content-Length: " + length + b"\r\n\r\nhello")
        assert "bad Content-Length" in (await failure(fetcher())).reason
    run(ca, dns_server, body)


def test_certificate_for_another_name_is_a_tls_failure(ca: trustme.CA,
                                                       dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_text(PATH, POLICY)
        exc = await failure(fetcher())
        assert exc.tls and "certificate verify failed" in exc.reason
        assert server.requests == []
    run(ca, dns_server, body, names=("other.example.test",))


def test_untrusted_certificate_is_a_tls_failure(ca: trustme.CA,
                                                dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        server.serve_text(PATH, POLICY)
        other_ca = trustme.CA()
        exc = await failure(fetcher(ssl_context=trusting(other_ca)))
        assert exc.tls and "certificate verify failed" in exc.reason
    run(ca, dns_server, body)


def test_no_address_and_refused_connection(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(server: HttpsTestServer, fetcher: Callable[..., HttpsFetcher]) -> None:
        assert "no address record" in (await failure(fetcher(), "mta-sts.nowhere.test")).reason
        with refusing_port() as port:
            exc = await failure(fetcher(port=port))
        assert "Connection refused" in exc.reason and not exc.tls
    run(ca, dns_server, body)


def test_silent_server_times_out(ca: trustme.CA, dns_server: DnsTestServer) -> None:
    dns_server.zone.add_a(HOST, "127.0.0.1")

    async def scenario() -> None:
        accepted, done = asyncio.Event(), asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set()
            await reader.read()  # never answers; the client gives up
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fetcher = HttpsFetcher(DnsResolver([dns_server.address], timeout=2.0), trusting(ca),
                               port=port, timeout=0.5)
        async with server:
            exc = await failure(fetcher)
            await done.wait()
        assert accepted.is_set() and "timed out after 0.5s" in exc.reason

    asyncio.run(scenario())


def test_text_response_helper_is_well_formed() -> None:
    assert text_response("ab") == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                   b"Content-Length: 2\r\nConnection: close\r\n\r\nab")
