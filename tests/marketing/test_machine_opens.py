"""Machine open and click detection (marketing.machine_opens): pure."""

from __future__ import annotations

import ipaddress

import pytest

from mailprime.marketing.machine_opens import MachineReason, classify

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
APPLE_MAIL = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko)")


@pytest.mark.parametrize(("agent", "ip", "reason"), [
    ("Mozilla/5.0", "203.0.113.9", MachineReason.APPLE_MPP),  # MPP's prefetch: the bare agent
    (APPLE_MAIL, "17.58.63.10", MachineReason.APPLE_MPP),  # from Apple's own network
    (APPLE_MAIL, "::ffff:17.1.2.3", MachineReason.APPLE_MPP),
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
     "66.102.8.1", MachineReason.GMAIL_PROXY),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "98.136.1.1",
     MachineReason.YAHOO_PROXY),
    ("Barracuda Sentinel (EE)", "64.235.144.1", MachineReason.SCANNER),
    ("python-requests/2.31.0", "198.51.100.1", MachineReason.SCANNER),
    ("", "198.51.100.1", MachineReason.NO_USER_AGENT),
    (None, None, MachineReason.NO_USER_AGENT),
])
def test_machines_are_recognised(agent: str | None, ip: str | None, reason: MachineReason) -> None:
    assert classify(agent, ip) is reason


def test_people_are_people() -> None:
    assert classify(FIREFOX, "198.51.100.7") is None
    assert classify(APPLE_MAIL, "2001:db8::1") is None
    assert classify(FIREFOX, "not an ip") is None


def test_operator_networks_count_as_scanners() -> None:
    nets = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:5::/48"))
    assert classify(FIREFOX, "192.0.2.44", nets) is MachineReason.SCANNER
    assert classify(FIREFOX, "2001:db8:5::9", nets) is MachineReason.SCANNER
    assert classify(FIREFOX, "192.0.3.1", nets) is None
