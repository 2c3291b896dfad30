"""Recipient resolution: where a RCPT address goes (local accounts, forwards) or why it is refused.

Resolution order, like Postfix's virtual alias then mailbox maps: an exact account wins; else
aliases (exact address, then the "@domain" catch-all) expand one level, recursively up to a
bounded depth (loops and fan-out are capped); a destination that is not in a local domain is a
remote forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailprime.domain.address import Address
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.mail import LocalDelivery
from mailprime.storage.ports import DirectoryStore

MAX_ALIAS_DEPTH = 8  # Postfix's virtual_alias_recursion_limit is 1000; 8 is ample for us
MAX_ALIAS_FANOUT = 1000  # like virtual_alias_expansion_limit


@dataclass(frozen=True, slots=True)
class Resolution:
    local: tuple[LocalDelivery, ...] = ()
    remote: tuple[str, ...] = ()
    is_local_domain: bool = False

    @property
    def found(self) -> bool:
        return bool(self.local or self.remote)


async def resolve_recipient(directory: DirectoryStore, address: str) -> Resolution:
    """Resolves one envelope recipient. Raises InvalidAddress for syntactically bad input."""
    addr = Address.parse(address)
    if not await directory.is_local_domain(addr.domain):
        return Resolution(remote=(str(addr),), is_local_domain=False)
    local: list[LocalDelivery] = []
    remote: list[str] = []
    seen: set[str] = set()
    await _expand(directory, addr, local=local, remote=remote, seen=seen, depth=0)
    return Resolution(local=tuple(local), remote=tuple(remote), is_local_domain=True)


async def _expand(directory: DirectoryStore, addr: Address, *, local: list[LocalDelivery],
                  remote: list[str], seen: set[str], depth: int) -> None:
    if addr.key in seen or depth > MAX_ALIAS_DEPTH or len(local) + len(remote) >= MAX_ALIAS_FANOUT:
        return
    seen.add(addr.key)
    if not await directory.is_local_domain(addr.domain):
        remote.append(str(addr))
        return
    account = await directory.get_account(addr.key)
    if account is not None and not account.disabled:
        if all(d.account_id != account.id for d in local):
            local.append(LocalDelivery(account_id=account.id, recipient=account.address))
        return
    for destination in await directory.resolve_aliases(addr.key):
        try:
            target = Address.parse(destination)
        except InvalidAddress:
            continue  # a broken alias row must not break delivery to the others
        await _expand(directory, target, local=local, remote=remote, seen=seen, depth=depth + 1)


async def owns_address(directory: DirectoryStore, account_address: str, sender: str) -> bool:
    """True when `sender` is the account's own address, or an alias that resolves to it."""
    try:
        addr = Address.parse(sender)
    except InvalidAddress:
        return False
    own = Address.parse(account_address)
    if addr.key == own.key:
        return True
    resolution = await resolve_recipient(directory, str(addr))
    return any(d.recipient.lower() == own.key for d in resolution.local) and not resolution.remote
