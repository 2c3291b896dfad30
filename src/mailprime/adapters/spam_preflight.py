"""The campaign pre-flight's spam score (marketing.preflight.SpamScorer) from rspamd.

marketing may not import services, so this adapter (wired by the CLI and the runtime) gives the
pre-flight an rspamd client of its own, on the rspamd the MX is configured with. The sample is
scanned as an authenticated outbound
message (rspamd's `User` header): what matters is how its content scores, not whether this
machine's address is in the From domain's SPF record.
"""

from __future__ import annotations

from mailprime.config import Settings
from mailprime.marketing.preflight import SpamScorer, SpamVerdict
from mailprime.net.http_client import HttpClient
from mailprime.services.rspamd import Envelope, RspamdClient

LOOPBACK = "127.0.0.1"


class RspamdPreflight:
    def __init__(self, client: RspamdClient, helo: str) -> None:
        self.client = client
        self.helo = helo

    async def score(self, message: bytes, *, sender: str, recipient: str) -> SpamVerdict:
        scan = await self.client.scan(message, Envelope(
            client_ip=LOOPBACK, helo=self.helo, mail_from=sender, recipients=(recipient,),
            queue_id="preflight", user=sender))
        if scan.error:
            return SpamVerdict("", error=scan.error)
        return SpamVerdict(scan.rspamd_action, scan.score, scan.required, scan.symbols)


def spam_scorer(settings: Settings) -> SpamScorer | None:
    """rspamd when [authentication] rspamd_url is set, else None (no spam score)."""
    auth = settings.authentication
    if not auth.rspamd_url:
        return None
    client = RspamdClient(HttpClient(), auth.rspamd_url, timeout=auth.rspamd_timeout)
    return RspamdPreflight(client, settings.server.hostname)


__all__ = ["RspamdPreflight", "spam_scorer"]
