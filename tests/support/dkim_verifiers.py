"""The two independent DKIM verifiers the tests trust, each given the key records directly (no
DNS server needed):

* dkimpy (`dkim.DKIM.verify`, each signature by index), with a `dnsfunc` answering our TXT;
* OpenDKIM's filter in test mode (`opendkim -t FILE`), its keys from a `TestPublicKeys` file,
  its verdicts read from the Authentication-Results field it would add (`-vvv` prints it).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dkim

OPENDKIM = "/usr/sbin/opendkim"


def opendkim_unavailable() -> str | None:
    if not os.access(OPENDKIM, os.X_OK):
        return f"OpenDKIM not installed: {OPENDKIM} missing (apt-get install opendkim)"
    return None


@dataclass(frozen=True)
class Verdict:
    selector: str
    algorithm: str
    result: str  # "pass", "fail", "neutral", ...


def signatures(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature field, top first."""
    parsed = dkim.DKIM(message)
    found = []
    for name, value in parsed.headers:
        if name.lower() == b"dkim-signature":
            found.append(dkim.util.parse_tag_value(value))
    return found


def dkimpy_verify(message: bytes, records: Mapping[str, str]) -> list[Verdict]:
    """records: "selector._domainkey.domain" -> TXT content."""
    answers = {f"{name}.".encode(): txt.encode() for name, txt in records.items()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return answers.get(name)

    checker = dkim.DKIM(message)
    verdicts = []
    for index, tags in enumerate(signatures(message)):
        try:
            ok = checker.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            ok = False
        verdicts.append(Verdict(tags[b"s"].decode(), tags[b"a"].decode(), "pass" if ok else "fail"))
    return verdicts


_AR_DKIM = re.compile(r"dkim=(\w+)[^;]*?header\.a=(\S+) header\.s=(\S+)")


def opendkim_verify(message: bytes, records: Mapping[str, str], workdir: Path) -> list[Verdict]:
    """Every signature's verdict as OpenDKIM 2.11 reports it, in its order."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys = workdir / "keys.txt"
    keys.write_text("".join(f"{name} {txt}\n" for name, txt in records.items()))
    conf = workdir / "opendkim.conf"
    conf.write_text(f"TestPublicKeys {keys}\nMode v\nSyslog no\nAlwaysAddARHeader yes\n")
    msg = workdir / "message.eml"
    msg.write_bytes(message)
    done = subprocess.run([OPENDKIM, "-x", str(conf), "-vvv", "-t", str(msg)], capture_output=True,
                          text=True, timeout=60, check=False)
    out = done.stdout + done.stderr
    header = out.split("hname='Authentication-Results'", 1)
    assert done.returncode == 0 and len(header) == 2, out
    return [Verdict(s, a, r) for r, a, s in _AR_DKIM.findall(header[1].split("' ", 1)[0])]
