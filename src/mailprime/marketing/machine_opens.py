"""Which opens and clicks were fetched by a machine rather than seen by a person.

Theory of operation. Since 2021 a large share of "opens" are image fetches no person caused:
Apple Mail Privacy Protection downloads every remote image of a message when it arrives, through
Apple's proxies (the iCloud Private Relay infrastructure, egress from Apple's 17.0.0.0/8 among
others), with the bare user agent "Mozilla/5.0"; Gmail and Yahoo fetch images through their own
proxies (user agents naming "GoogleImageProxy" / "YahooMailProxy"), which hides the reader and
caches the pixel; corporate gateways and link scanners (Barracuda, Mimecast, Proofpoint,
Microsoft's Safe Links preview, ...) fetch every link of a message to look for malware. Such
events are not dropped: the fetch did happen (and an MPP fetch does say the message reached an
Apple Mail inbox). They are recorded with `machine=yes` and the reason, so that engagement
figures and segments ("opened in the last 90 days") can leave them out, and the guess can be
revisited without losing data. The tables are heuristics from public descriptions of these
services; an unknown proxy simply counts as a person.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence

MAX_USER_AGENT = 512  # longer user agents are cut before matching (nothing we look for is later)


class MachineReason(enum.StrEnum):
    APPLE_MPP = "apple-mpp"
    GMAIL_PROXY = "gmail-proxy"
    YAHOO_PROXY = "yahoo-proxy"
    SCANNER = "scanner"
    NO_USER_AGENT = "no-user-agent"


# Apple's own network (ARIN NET-17): MPP fetches egress from it as well as from relay partners.
_APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
# The exact user agent of MPP's prefetch: Mail itself sends a full WebKit string.
_APPLE_PREFETCH_AGENTS = frozenset({"Mozilla/5.0"})
_PROXY_AGENTS: tuple[tuple[str, MachineReason], ...] = (
    ("googleimageproxy", MachineReason.GMAIL_PROXY),
    ("ggpht.com", MachineReason.GMAIL_PROXY),
    ("yahoomailproxy", MachineReason.YAHOO_PROXY),
)
# Substrings (lower-case) of the user agents of link and attachment scanners and of generic
# HTTP libraries, which no mail client a person reads with sends.
_SCANNER_AGENTS = (
    "barracuda", "mimecast", "proofpoint", "symantec", "messagelabs", "trendmicro",
    "trend micro", "forcepoint", "sophos", "fortiguard", "cisco", "ironport", "zscaler",
    "bingpreview", "safelinks", "microsoft office existence discovery", "ms-office",
    "headlesschrome", "phantomjs", "python-requests", "python-urllib", "go-http-client",
    "curl/", "wget/", "libwww-perl", "java/", "okhttp", "axios", "node-fetch",
    "googlebot", "bingbot", "slackbot", "facebookexternalhit", "bot/", "spider", "crawler",
)


def classify(user_agent: str | None, ip: str | None,
             extra_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
             ) -> MachineReason | None:
    """The reason to think a machine made this request, or None (a person, as far as we know).
    `extra_networks`: scanner or proxy networks the operator knows of (counted as scanners)."""
    agent = (user_agent or "").strip()[:MAX_USER_AGENT]
    address = _ip(ip)
    if agent in _APPLE_PREFETCH_AGENTS or (
            address is not None and any(address in n for n in _APPLE_NETWORKS)):
        return MachineReason.APPLE_MPP
    lowered = agent.lower()
    for needle, reason in _PROXY_AGENTS:
        if needle in lowered:
            return reason
    if any(needle in lowered for needle in _SCANNER_AGENTS):
        return MachineReason.SCANNER
    if address is not None and any(address in n for n in extra_networks
                                   if n.version == address.version):
        return MachineReason.SCANNER
    if not agent:
        return MachineReason.NO_USER_AGENT
    return None


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


__all__ = ["MachineReason", "classify"]
