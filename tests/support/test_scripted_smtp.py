"""The scripted SMTP server answers as told and records what it got (driven by smtplib)."""

from __future__ import annotations

import asyncio
import smtplib

from tests.support.scripted_smtp import Script, scripted_smtp


def test_replies_per_recipient_records_and_closes_after_421() -> None:
    async def scenario() -> None:
        script = Script.by_recipient({"full@c.test": "452 4.2.2 Mailbox full",
                                      "slow@c.test": "421 4.7.0 Try again later"})
        async with scripted_smtp(script) as server:

            def client() -> tuple[list[int], bool]:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
                    smtp.ehlo("client.test")
                    smtp.mail("a@a.test")
                    codes = [smtp.rcpt(r)[0] for r in ("ok@c.test", "full@c.test")]
                    codes.append(smtp.data(b"Subject: s\r\n\r\n.dot line\r\n")[0])
                    smtp.mail("b@a.test")
                    codes.append(smtp.rcpt("slow@c.test")[0])
                    try:
                        smtp.noop()
                    except smtplib.SMTPServerDisconnected:
                        return codes, True
                    return codes, False

            codes, closed = await asyncio.to_thread(client)
            assert codes == [250, 452, 250, 421]
            assert closed
            first, second = await server.wait_for(2)
            assert (first.sender, first.recipients, first.refused) == (
                "a@a.test", ["ok@c.test"], {"full@c.test": "452 4.2.2 Mailbox full"})
            assert first.data == b"Subject: s\r\n\r\n.dot line\r\n"  # dot-unstuffed
            assert (second.sender, second.recipients, second.data) == ("b@a.test", [], None)
            assert second.refused == {"slow@c.test": "421 4.7.0 Try again later"}

    asyncio.run(scenario())
