"""A real rspamd (Debian package `rspamd`) for tests: one normal worker on a free loopback port,
started in the foreground from a minimal configuration under a temporary directory.

The configuration loads none of rspamd's stock rules (they would query public DNS blocklists,
and there is no network here) and no TLD list (compiling the full one takes ~10 s): only two
test symbols, so the verdict is known in advance. A message whose Subject contains REJECT-ME
scores 20 (action "reject", threshold 15); JUNK-ME scores 8 (action "add header", threshold 6);
anything else scores 0 ("no action"). Check `rspamd_unavailable()` first; tests skip with its
reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postfix import free_port, wait_for_port

RSPAMD = "/usr/bin/rspamd"
START_TIMEOUT = 8.0

_CONFIG = """
options {{
  pidfile = "{d}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:{dead}"]; timeout = 0.2s; retransmits = 0; }}
  filters = "";
  url_tld = "{d}/tld.dat";
  disable_hyperscan = true;
  hs_cache_dir = "{d}/";
  tempdir = "{d}";
}}
logging {{ type = "file"; filename = "{d}/rspamd.log"; level = "info"; }}
lua = "{d}/rules.lua";
actions {{ reject = 15; add_header = 6; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
  mime = true;
}}
"""

_RULES = """
local function subject_has(task, word)
  local s = task:get_subject()
  return s ~= nil and s:find(word, 1, true) ~= nil
end
rspamd_config:register_symbol({
  name = 'MAILPRIME_TEST_REJECT', score = 20.0,
  callback = function(task) return subject_has(task, 'REJECT-ME') end
})
rspamd_config:register_symbol({
  name = 'MAILPRIME_TEST_JUNK', score = 8.0,
  callback = function(task) return subject_has(task, 'JUNK-ME') end
})
"""


def rspamd_unavailable() -> str | None:
    if not Path(RSPAMD).exists() and shutil.which("rspamd") is None:
        return "rspamd is not installed (Debian package rspamd; scripts/install-peers.sh)"
    return None


@contextmanager
def rspamd_server(tmp: Path) -> Iterator[str]:
    """Runs rspamd; yields its base URL (http://127.0.0.1:PORT)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (tmp / "tld.dat").write_text("test\ncom\norg\n")
    (tmp / "rules.lua").write_text(_RULES)
    (tmp / "rspamd.conf").write_text(_CONFIG.format(d=tmp, port=port, dead=free_port()))
    binary = RSPAMD if Path(RSPAMD).exists() else (shutil.which("rspamd") or RSPAMD)
    # -f: foreground. As root, rspamd wants a user to drop to; -u/-g root with -i keeps it root.
    as_root = ["-u", "root", "-g", "root", "-i"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, "-f", *as_root, "-c", str(tmp / "rspamd.conf"),
         f"--var=DBDIR={tmp}", f"--var=RUNDIR={tmp}", f"--var=LOGDIR={tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, START_TIMEOUT)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # rspamd's main process stops its workers on SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
