"""Running the real `mailprime` command in subprocesses (`python -m mailprime`, the same entry
point as the console script), and a data directory made by `mailprime init`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailprime.config import load_settings
from mailprime.services.passwords import verify_password
from mailprime.storage.sql import open_store


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout and stderr with all runs of white space made one space (Rich wraps lines)."""
        return " ".join((self.out + " " + self.err).split())


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours without MAILPRIME_* overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPRIME_")}
    env["COLUMNS"] = "200"  # Rich wraps at 80 columns when not writing to a terminal
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> Result:
    # No stdin given: an empty one, never the terminal the tests run from.
    done = subprocess.run([sys.executable, "-m", "mailprime", *args], cwd=cwd,
                          input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env(), check=False)
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class DataDir:
    root: Path
    config: Path
    password: str  # postmaster's, as `init` printed it
    init_output: Result

    def cli(self, *args: str, stdin: str | None = None) -> Result:
        return run_cli(*args, "--config", str(self.config), cwd=self.root, stdin=stdin)

    def cli_many(self, *calls: Sequence[str]) -> list[Result]:
        """Independent invocations (none depends on another's effect), run concurrently: each
        one pays the interpreter's start-up, so running them side by side keeps the suite fast."""
        return run_many([[*args, "--config", str(self.config)] for args in calls], cwd=self.root)


def run_many(calls: Sequence[Sequence[str]], *, cwd: Path) -> list[Result]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run_cli(*args, cwd=cwd), calls))


PASSWORD_LINE = re.compile(r"password: (\S+)\s+\(shown once\)")


def printed_password(result: Result) -> str:
    found = PASSWORD_LINE.findall(result.out)
    assert len(found) == 1, result.out
    return str(found[0])


def init_data_dir(tmp: Path, *extra: str) -> DataDir:
    target = tmp / "var"
    result = run_cli("init", "--dir", str(target), "--domain", "a.test", "--hostname",
                     "mail.a.test", *extra, cwd=tmp)
    assert result.code == 0, result.err
    return DataDir(target, target / "mailprime.toml", printed_password(result), result)


@pytest.fixture(scope="session")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    """One `init` per session; tests get a copy (the config's data_dir is relative to it)."""
    return init_data_dir(tmp_path_factory.mktemp("template"))


@pytest.fixture
def data_dir(initialized: DataDir, tmp_path: Path) -> DataDir:
    root = tmp_path / "var"
    shutil.copytree(initialized.root, root)
    return DataDir(root, root / "mailprime.toml", initialized.password, initialized.init_output)


def password_ok(config: Path, address: str, password: str) -> bool:
    """Whether `password` is the stored password of `address` (read from the database itself)."""
    settings = load_settings(config, environ={})

    async def check() -> bool:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            account = await store.get_account(address)
        finally:
            await store.close()
        return account is not None and verify_password(account.password_hash, password)

    return asyncio.run(check())
