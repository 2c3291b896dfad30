"""`mailprime serve` as a real process (the command an operator runs), for tests and the bench.

The process writes `<data>/run/ready.json` once every listener is bound; the helper waits for it
(bounded: an external process has no other signal), yields the Popen, and on exit sends SIGTERM,
waits for the graceful drain and kills only if that overruns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLI = [sys.executable, "-c", "from mailprime.cli.main import main; main()"]


@contextmanager
def serving(config: Path, env: dict[str, str] | None = None, *, start_timeout: float = 30.0,
            stop_timeout: float = 30.0, new_session: bool = False
            ) -> Iterator[subprocess.Popen[bytes]]:
    """`new_session`: the process leads its own process group, so that a test can kill it and
    every process it started at once (`os.killpg(proc.pid, signal.SIGKILL)`)."""
    ready = config.parent / "run" / "ready.json"
    ready.unlink(missing_ok=True)  # a SIGKILLed run leaves its file behind
    log_path = config.parent / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*CLI, "serve", "--config", str(config)], stdout=log, stderr=log,
                                env={**os.environ, **(env or {})}, start_new_session=new_session)
        try:
            deadline = time.monotonic() + start_timeout
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mailprime did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
