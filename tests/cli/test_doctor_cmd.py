"""`mailprime doctor`: the real command (a subprocess) on a data directory made by `init`, with
DKIM keys made by `mailprime dkim keygen`, asking the real DNS server on loopback: the table, the
fixes printed unwrapped and ready to paste, --json, and the exit status."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from tests.cli.conftest import DataDir, Result, cli_env, run_cli
from tests.cli.test_dkim_cmd import parse_zone
from tests.support.dns_server import DnsTestServer

pytestmark = pytest.mark.slow  # runs the real command

IP = "192.0.2.10"


def doctor(data_dir: DataDir, dns: DnsTestServer, *args: str) -> Result:
    env = cli_env(MAILPRIME_DNS_NAMESERVERS=dns.address, MAILPRIME_DNS_TIMEOUT="3",
                  MAILPRIME_DOCTOR_BLOCKLISTS="bl.test")
    return run_cli("doctor", *args, "--config", str(data_dir.config), cwd=data_dir.root, env=env)


def doctor_many(data_dir: DataDir, dns: DnsTestServer, *calls: Sequence[str]) -> list[Result]:
    """Independent invocations side by side: each pays the interpreter's start-up."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: doctor(data_dir, dns, *args), calls))


@pytest.fixture
def published(data_dir: DataDir, dns_server: DnsTestServer) -> DataDir:
    """a.test (hostname mail.a.test, as `init` made it) with the records the doctor wants."""
    made = data_dir.cli("dkim", "keygen", "a.test")
    assert made.code == 0, made.err
    zone = dns_server.zone
    for name, record in parse_zone(made.out).items():
        zone.add_txt(name, record)
    zone.add_txt("a.test", "v=spf1 ip4:192.0.2.10 -all")
    zone.add_txt("_dmarc.a.test", "v=DMARC1; p=quarantine; rua=mailto:dmarc@a.test")
    zone.add_a("mail.a.test", IP)
    zone.add_ptr(IP, "mail.a.test")
    zone.add_mx("a.test", 10, "mail.a.test")
    zone.add_txt("_smtp._tls.a.test", "v=TLSRPTv1; rua=mailto:tls@a.test")
    return data_dir


def test_a_domain_set_up_right_exits_0_with_warnings_only(published: DataDir,
                                                          dns_server: DnsTestServer) -> None:
    # Sending addresses: mail.a.test's A record.
    done, bad_domain = doctor_many(published, dns_server, ["a.test"], ["not a domain"])
    assert bad_domain.code == 2 and "'not a domain'" in bad_domain.text
    assert done.code == 0, done.text
    assert "passed: 9 OK, 2 WARN, 0 FAIL" in done.out
    # Recommended, not required: MTA-STS is absent and `init` made a self-signed certificate.
    assert "MTA-STS" in done.out and "not published (recommended" in done.text
    assert "self-signed" in done.text
    assert "192.0.2.10 -> mail.a.test -> 192.0.2.10" in done.out
    assert "To fix, publish or run:" in done.out
    assert "version: STSv1\nmode: testing\nmx: mail.a.test\nmax_age: 604800\n" in done.out


def test_json_and_a_failure_exit_1_with_the_record_to_paste(published: DataDir,
                                                            dns_server: DnsTestServer) -> None:
    dns_server.zone.remove("a.test", "TXT")
    dns_server.zone.add_txt("a.test", "v=spf1 ip4:198.51.100.1 -all")
    table, as_json = doctor_many(published, dns_server, ["a.test", "--sending-ip", IP],
                                 ["A.test.", "--sending-ip", IP, "--json"])
    assert table.code == 1, table.text
    # The fix is printed whole on one line, never wrapped by the table.
    assert 'a.test. IN TXT "v=spf1 ip4:198.51.100.1 ip4:192.0.2.10 -all"\n' in table.out
    assert "FAILED: 8 OK, 2 WARN, 1 FAIL" in table.out
    assert as_json.code == 1, as_json.text
    report = json.loads(as_json.out)
    assert report["domain"] == "a.test" and report["passed"] is False
    assert report["sending_ips"] == [IP] and report["bounce_domain"] == "a.test"
    spf = [c for c in report["checks"] if c["check"] == "SPF"]
    assert spf == [{"check": "SPF", "subject": "a.test", "status": "FAIL",
                    "found": "'v=spf1 ip4:198.51.100.1 -all' does not cover 192.0.2.10 (fail)",
                    "fix": 'a.test. IN TXT "v=spf1 ip4:198.51.100.1 ip4:192.0.2.10 -all"'}]


def test_bounce_domain_option_and_usage_errors(published: DataDir, dns_server: DnsTestServer) -> None:
    done, bad_ip = doctor_many(
        published, dns_server, ["a.test", "--bounce-domain", "bounces.a.test", "--json"],
        ["a.test", "--sending-ip", "192.0.2.300"])
    assert done.code == 1
    report = json.loads(done.out)
    failed = {(c["check"], c["subject"]) for c in report["checks"] if c["status"] == "FAIL"}
    assert failed == {("SPF", "bounces.a.test"), ("MX", "bounces.a.test")}
    assert bad_ip.code == 2 and "is not an IPv4 or IPv6 address" in bad_ip.text


def test_sending_addresses_from_the_ip_pools_and_bounce_domain_from_verp(
        published: DataDir, dns_server: DnsTestServer) -> None:
    with published.config.open("a", encoding="utf-8") as config:
        config.write('\n[bounces]\nverp_domain = "bounces.a.test"\n\n'
                     '[shaping.pools.bulk]\naddresses = ["192.0.2.20", "192.0.2.10"]\n\n'
                     '[shaping.pools.transactional]\naddresses = ["192.0.2.10"]\n')
    zone = dns_server.zone
    zone.add_ptr("192.0.2.20", "mail.a.test")
    zone.add_a("mail.a.test", "192.0.2.20")
    zone.add_txt("bounces.a.test", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add_mx("bounces.a.test", 10, "mail.a.test")
    done = doctor(published, dns_server, "a.test", "--json")
    report = json.loads(done.out)
    assert report["sending_ips"] == ["192.0.2.20", "192.0.2.10"]
    assert report["bounce_domain"] == "bounces.a.test"
    failed = [(c["check"], c["subject"], c["found"]) for c in report["checks"] if c["status"] == "FAIL"]
    assert failed == [("SPF", "a.test",
                       "'v=spf1 ip4:192.0.2.10 -all' does not cover 192.0.2.20 (fail)")]
    assert done.code == 1


class PolicyHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"version: STSv1\r\nmode: enforce\r\nmx: mail.a.test\r\nmax_age: 86400\r\n"
        ok = self.path == "/.well-known/mta-sts.txt" and self.headers["Host"].startswith("mta-sts.a.test")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def policy_server(ca: trustme.CA) -> Iterator[int]:
    """An HTTPS server on loopback serving a.test's MTA-STS policy; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PolicyHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mta-sts.a.test").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def test_the_mta_sts_policy_is_fetched_with_the_mta_sts_trust_store_and_port(
        published: DataDir, dns_server: DnsTestServer, ca: trustme.CA, policy_server: int) -> None:
    ca.cert_pem.write_to_path(str(published.root / "ca.pem"))
    with published.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[mta_sts]\nca_file = "{published.root / "ca.pem"}"\n'
                     f"https_port = {policy_server}\n")
    dns_server.zone.add_txt("_mta-sts.a.test", "v=STSv1; id=1")
    dns_server.zone.add_a("mta-sts.a.test", "127.0.0.1")
    done = doctor(published, dns_server, "a.test", "--json")
    mta_sts = [c for c in json.loads(done.out)["checks"] if c["check"] == "MTA-STS"]
    assert mta_sts == [{"check": "MTA-STS", "subject": "a.test", "status": "OK",
                        "found": "mode enforce, mx mail.a.test, max_age 86400", "fix": ""}]
    assert done.code == 0, done.text
