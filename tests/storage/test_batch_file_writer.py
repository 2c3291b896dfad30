"""The batch file writer (storage/sql/batch_file.py) and `Spool.write_batch`, on real
filesystems: ext4 under the test's temporary directory (O_DIRECT) and tmpfs (/dev/shm, which
takes O_DIRECT since Linux 6.6, or is written through the page cache where it does not)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.errors import StorageError
from mailprime.storage.sql import spool as spool_module
from mailprime.storage.sql.batch_file import BLOCK, CHUNK, BatchFileWriter
from mailprime.storage.sql.spool import Spool


@pytest.fixture(params=["disk", "tmpfs"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "disk":
        yield tmp_path
        return
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm (tmpfs) on this machine")
    folder = shm / f"mailprime-test-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    try:
        yield folder
    finally:
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()


@pytest.mark.parametrize("direct", [True, False])
def test_the_file_holds_exactly_the_contents(where: Path, direct: bool) -> None:
    writer = BatchFileWriter(direct=direct)
    contents = [b"a" * 5_000, b"", b"b" * BLOCK, b"c" * 3, os.urandom(70_001)]
    writer.write(where / "one.eml", contents)
    assert (where / "one.eml").read_bytes() == b"".join(contents)
    if not direct:
        assert writer.direct is False


def test_direct_io_is_used_on_ext4(tmp_path: Path) -> None:
    writer = BatchFileWriter()
    writer.write(tmp_path / "one.eml", [b"x" * 10_000])
    assert writer.direct, "ext4 takes O_DIRECT: the writer should not have fallen back"


def test_contents_across_buffer_chunks_and_padding_read_back_exactly(tmp_path: Path) -> None:
    writer = BatchFileWriter()
    writer.write(tmp_path / "big.eml", [b"B" * 50_000])
    writer.write(tmp_path / "small.eml", [b"s" * 10])  # the padding must not carry B's out
    # Contents ending exactly at a chunk's end, and others straddling the next two chunks.
    contents = [b"1" * (CHUNK - 100), b"2" * 100, b"3" * (CHUNK + 7), os.urandom(CHUNK // 2)]
    writer.write(tmp_path / "chunks.eml", contents)
    assert writer.direct
    assert (tmp_path / "small.eml").read_bytes() == b"s" * 10
    assert (tmp_path / "chunks.eml").read_bytes() == b"".join(contents)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "taken.eml").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        BatchFileWriter().write(tmp_path / "taken.eml", [b"new"])
    assert (tmp_path / "taken.eml").read_bytes() == b"keep"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=9_000), min_size=1, max_size=12), st.booleans())
def test_any_contents_read_back_through_the_spool(contents: list[bytes], direct: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:  # a fresh folder per example
        spool = Spool(Path(folder), direct_io=direct)
        places = spool.write_batch("batch", contents)
        assert len(places) == len(contents) and len({path for path, _ in places}) == 1
        for (path, offset), content in zip(places, contents, strict=True):
            assert spool.read(path, offset, len(content)) == content
            file = spool.open_read(path, offset, len(content))
            try:
                assert file.size == len(content)
                assert file.pread(0, len(content) + 50) == content
                assert file.pread(len(content) // 2, 7) == content[len(content) // 2:][:7]
            finally:
                file.close()


def test_a_batch_larger_than_a_file_may_hold_is_cut(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "BATCH_FILE_MAX", 10_000)
    spool = Spool(tmp_path)
    contents = [bytes([65 + i]) * 3_000 for i in range(7)] + [b"z" * 25_000, b"y" * 10]
    places = spool.write_batch("batch", contents)
    files = {path for path, _ in places}
    # Three of 3,000 a file, twice; the seventh alone (the 25,000 would pass the limit); the
    # 25,000 alone (larger than a file may hold); the 10 (with the 25,000 it would pass too).
    assert len(files) == 5
    for (path, offset), content in zip(places, contents, strict=True):
        assert spool.read(path, offset, len(content)) == content


def test_a_short_file_is_an_error_not_a_short_message(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ((path, offset),) = spool.write_batch("batch", [b"hello"])
    with pytest.raises(StorageError, match="ends before its content"):
        spool.read(path, offset, 6)


def test_a_failed_batch_leaves_no_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.ensure_root()
    for shard in range(256):  # every shard a file: no batch file can be created
        (tmp_path / f"{shard:02x}").write_bytes(b"")
    with pytest.raises(StorageError, match="spool write failed"):
        spool.write_batch("batch", [b"a" * 100, b"b" * 100])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{s:02x}" for s in range(256)]
