"""A SQLite database the store creates has SQLITE_PAGE_SIZE pages (a queued campaign message is
one page, not four); a database made earlier with SQLite's default 4 KB pages keeps them and
works as before (WAL mode cannot change a page size)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from mailprime.storage.sql import open_store
from mailprime.storage.sql.engines import SQLITE_PAGE_SIZE


def _page_size(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def test_a_new_database_gets_the_larger_pages_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    async def main() -> None:
        new, old = tmp_path / "new.db", tmp_path / "old.db"
        made = sqlite3.connect(old)  # as an earlier version left it: 4 KB pages, WAL
        made.execute("PRAGMA page_size = 4096")
        made.execute("PRAGMA journal_mode = WAL")
        made.execute("CREATE TABLE earlier (x)")
        made.close()
        for db in (new, old):
            store = await open_store(f"sqlite:///{db}", spool_dir=tmp_path / "spool",
                                     inline_max=64 * 1024)
            try:
                await store.add_domain("a.test")
                assert await store.is_local_domain("a.test")
            finally:
                await store.close()
        assert SQLITE_PAGE_SIZE == 16384
        assert (_page_size(new), _page_size(old)) == (SQLITE_PAGE_SIZE, 4096)

    asyncio.run(main())
