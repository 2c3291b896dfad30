"""The refusals the sample generator asks real MTAs to bounce, one per sample file.

Each scenario is a recipient whose (sink) MX answers with a reply copied from what the named
provider or server sends today; the MTA under test then writes its own bounce about it. The
replies' wording follows the providers' published error pages (Gmail's SMTP error reference,
Microsoft's NDR reference for Exchange Online, Yahoo's sender error codes).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.message.bounces.sink import Rule

SENDER = "news@origin.test"


@dataclass(frozen=True)
class Scenario:
    name: str  # sample file stem, after the MTA's name
    recipient: str
    rule: Rule


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("user-unknown", "nosuch@example.net", Rule("rcpt", 550, (
        "5.1.1 <nosuch@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
    ))),
    Scenario("mailbox-full", "full@example.net", Rule("rcpt", 552, (
        "5.2.2 <full@example.net> Quota exceeded (mailbox for user is full)",
    ))),
    Scenario("too-large", "small@example.net", Rule("data", 552, (
        "5.3.4 Message size exceeds fixed limit",
    ))),
    Scenario("gmail-5.7.26", "gmail-auth@gmail.example", Rule("data", 550, (
        "5.7.26 This mail has been blocked because the sender is unauthenticated.",
        "5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.",
        "5.7.26 ",
        "5.7.26  Authentication results:",
        "5.7.26  DKIM = did not pass",
        "5.7.26  SPF [origin.test] with ip: [127.0.0.1] = did not pass",
        "5.7.26 ",
        "5.7.26  For instructions on setting up authentication, go to",
        "5.7.26  https://support.google.com/mail/answer/81126#authentication "
        "d9443c01a7336-1f2b5d1c2b5si12345ad.123 - gsmtp",
    ))),
    Scenario("gmail-user-unknown", "gone@gmail.example", Rule("rcpt", 550, (
        "5.1.1 The email account that you tried to reach does not exist. Please try",
        "5.1.1 double-checking the recipient's email address for typos or",
        "5.1.1 unnecessary spaces. For more information, go to",
        "5.1.1  https://support.google.com/mail/?p=NoSuchUser 41be03b00d2f7-b2bb1c1e5fesi123 - gsmtp",
    ))),
    Scenario("gmail-5.7.1-spam", "spamtrap@gmail.example", Rule("data", 550, (
        "5.7.1 [127.0.0.1      12] Our system has detected that this message is",
        "5.7.1 likely unsolicited mail. To reduce the amount of spam sent to Gmail,",
        "5.7.1 this message has been blocked. For more information, go to",
        "5.7.1  https://support.google.com/mail/?p=UnsolicitedMessageError "
        "a640c23a62f3a-a6f0e8f5c0bsi123 - gsmtp",
    ))),
    Scenario("microsoft-5.7.515", "ms-auth@outlook.example", Rule("data", 550, (
        "5.7.515 Access denied, sending domain origin.test doesn't meet the required "
        "authentication level. The sender's domain in the 5322.From address doesn't meet the "
        "authentication requirements defined for the sender. To learn more about this error, "
        "visit https://aka.ms/Email-Auth-Reqs [AM2PEPF0001C70A.eurprd05.prod.outlook.com]",
    ))),
    Scenario("microsoft-5.7.708", "ms-ip@outlook.example", Rule("rcpt", 550, (
        "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For more "
        "information please go to http://go.microsoft.com/fwlink/?LinkId=526653 AS(7230) "
        "[DB5PEPF00014B9A.eurprd02.prod.outlook.com]",
    ))),
    Scenario("outlook-user-unknown", "nobody@outlook.example", Rule("rcpt", 550, (
        "5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
        "[AM4PEPF00027A5F.eurprd04.prod.outlook.com]",
    ))),
    Scenario("yahoo-5.7.9-policy", "yahoo-policy@yahoo.example", Rule("data", 554, (
        "5.7.9 Message not accepted for policy reasons.  See https://senders.yahooinc.com/error-codes",
    ))),
    Scenario("yahoo-tss04-expired", "yahoo-busy@yahoo.example", Rule("rcpt", 421, (
        "4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or "
        "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    ))),
)
