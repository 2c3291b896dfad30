"""Contact use cases: validating an address before it becomes a contact, adding and reading.

Theory of operation
-------------------
An address becomes a contact only after email-validator has checked its syntax (RFC 5322/6531
as the library implements it: quoted local parts and IP-literal domains refused, which mail
marketing never needs). Deliverability is NOT checked (no DNS look-up): an import of a million
rows must not make a million queries, and a domain that is down today is not a wrong address.
A bad address is caught later by its hard bounce, which suppresses it.

The validator's normalised form (Unicode NFC, domain lower-cased) is what is stored; storage keys
it by the lower-cased whole address (domain.audience).
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from mailprime.domain.audience import Attributes, Contact, ContactInput
from mailprime.domain.errors import InvalidAddress
from mailprime.storage.ports import AudienceStore

MAX_NAME = 200  # characters of a contact's name kept
MAX_ATTRIBUTES_JSON = 65_536  # octets of a contact's attributes as JSON


def check_email(text: str) -> str:
    """The address in normal form, or InvalidAddress with the validator's reason."""
    try:
        return str(validate_email(text.strip(), check_deliverability=False,
                                  allow_smtputf8=True).normalized)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc


def contact_input(email: str, name: str = "", attributes: Attributes | None = None) -> ContactInput:
    """A validated ContactInput (InvalidAddress for a bad address or a name too long)."""
    if len(name) > MAX_NAME:
        raise InvalidAddress(f"name longer than {MAX_NAME} characters")
    return ContactInput(email=check_email(email), name=name.strip(), attributes=attributes or {})


async def add_contact(store: AudienceStore, email: str, name: str = "",
                      attributes: Attributes | None = None) -> Contact:
    return await store.add_contact(contact_input(email, name, attributes))
