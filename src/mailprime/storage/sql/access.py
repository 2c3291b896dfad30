"""What the store's per-port mixins use of SqlStore: the group-commit writer, the read pool,
the clock and the accept path. `SqlStore` inherits the mixins (campaign_store.py,
messaging_store.py, ...) so each port's delegation lives beside its own SQL module instead of
in one ever-growing store.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Connection

from mailprime.domain.clock import Clock
from mailprime.domain.mail import Acceptance

if TYPE_CHECKING:
    from mailprime.storage.sql.committer import GroupCommitter

R = TypeVar("R")


class SqlAccess:
    """Declared here, provided by SqlStore: `_writer.run(fn)` runs `fn(conn)` in the writer's
    durable transaction; `_read(fn)` on the read pool; `_unlink(paths)` removes spool files."""

    _writer: GroupCommitter[Any]
    _clock: Clock

    async def _read(self, fn: Callable[[Connection], R]) -> R:
        raise NotImplementedError  # SqlStore's own _read is the one that runs

    async def _accept_together(self, acceptances: Sequence[Acceptance],
                               before: Callable[[Connection], object] | None = None) -> None:
        """The acceptances in one transaction, after `before(conn)` in the same one."""
        raise NotImplementedError  # SqlStore's own _accept_together is the one that runs

    async def _unlink(self, paths: Sequence[str]) -> None:
        """Removes spool files whose rows are gone (after that deletion committed)."""
        raise NotImplementedError  # SqlStore's own _unlink is the one that runs
