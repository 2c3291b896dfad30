"""`mailprime bounce classify FILE...`, run as the real command on the sample bounces and
complaints of tests/message/bounces: JSON lines, and the exit status for each kind of file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Result, run_cli, run_many

pytestmark = pytest.mark.slow  # runs the real command

SAMPLES = Path(__file__).resolve().parent.parent / "message" / "bounces"
BOUNCE_KEYS = ["file", "recipient", "action", "status", "reason", "hard", "diagnostic", "remote_mta"]


def lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.out.splitlines()]


def test_classify_prints_one_line_per_recipient_and_exits_0(tmp_path: Path) -> None:
    names = ["postfix-user-unknown-and-mailbox-full.eml", "exim-gmail-5.7.26.eml",
             "qmail-three-recipients.eml", "arf-abuse-original-rcpt-to.eml"]
    everything = sorted(str(p) for p in SAMPLES.glob("*.eml"))
    some, every = run_many([["bounce", "classify", *(str(SAMPLES / n) for n in names)],
                            ["bounce", "classify", *everything]], cwd=tmp_path)
    assert some.code == 0, some.err
    assert some.err == ""
    out = lines(some)
    assert [(o["recipient"], o.get("reason"), o.get("hard")) for o in out] == [
        ("full@example.net", "mailbox_full", False),
        ("nosuch@example.net", "user_unknown", True),
        ("gmail-auth@gmail.example", "auth_failure", True),
        ("nosuch@example.net", "user_unknown", True),
        ("anyone@nxdomain.example", "domain_not_found", True),
        ("slow@example.org", "expired", False),
        ("alice@mailbox.example", None, None),
    ]
    assert list(out[0]) == BOUNCE_KEYS
    assert out[0]["file"] == str(SAMPLES / names[0])
    assert (out[2]["action"], out[2]["status"]) == ("failed", "5.7.26")
    assert str(out[2]["diagnostic"]).startswith("550-5.7.26 This mail has been blocked")
    complaint = out[-1]
    assert complaint["feedback_type"] == "abuse"
    assert complaint["recipient_source"] == "original-rcpt-to"
    assert complaint["source_ip"] == "192.0.2.10"
    assert complaint["reported_domains"] == ["origin.test"]
    # Every sample names at least one recipient.
    assert every.code == 0, every.err
    assert {o["file"] for o in lines(every)} == set(everything)


def test_a_file_that_is_no_bounce_exits_1_and_unreadable_exits_2(tmp_path: Path) -> None:
    letter = tmp_path / "letter.eml"
    letter.write_bytes(b"From: bob@example.net\nSubject: hi\n\nNot a bounce.\n")
    nobody = tmp_path / "complaint-without-recipient.eml"
    nobody.write_bytes(
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
        b"--B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--B--\n")
    good = str(SAMPLES / "postfix-user-unknown.eml")
    missing = str(tmp_path / "missing.eml")
    not_bounce, no_recipient, unreadable = run_many([
        ["bounce", "classify", str(letter), good],
        ["bounce", "classify", str(nobody)],
        ["bounce", "classify", missing, str(tmp_path), str(letter), good],
    ], cwd=tmp_path)
    assert not_bounce.code == 1
    assert f"{letter}: not a bounce or a complaint report" in not_bounce.err
    assert [o["recipient"] for o in lines(not_bounce)] == ["nosuch@example.net"]  # the rest is read
    assert no_recipient.code == 1
    assert [(o["recipient"], o["feedback_type"]) for o in lines(no_recipient)] == [(None, "abuse")]
    assert "no recipient could be found" in no_recipient.err
    assert unreadable.code == 2
    assert f"{missing}: cannot read" in unreadable.err
    assert f"{tmp_path}: cannot read" in unreadable.err  # a directory
    assert [o["recipient"] for o in lines(unreadable)] == ["nosuch@example.net"]
    assert "Traceback" not in not_bounce.err + no_recipient.err + unreadable.err


def test_standard_input_and_an_mbox_line(tmp_path: Path) -> None:
    data = (SAMPLES / "exim-legacy-two-recipients.eml").read_text()
    mbox = tmp_path / "one.mbox"
    mbox.write_text("From MAILER-DAEMON Thu Nov 26 11:00:57 2026\n" + data)
    from_stdin = run_cli("bounce", "classify", "-", cwd=tmp_path, stdin=data)
    from_mbox = run_cli("bounce", "classify", str(mbox), cwd=tmp_path)
    for result in (from_stdin, from_mbox):
        assert result.code == 0, result.err
        assert [o["recipient"] for o in lines(result)] == ["nosuch@example.net", "ghost@nxdomain.example"]
    assert lines(from_stdin)[0]["file"] == "-"


def test_the_recipient_header_option(tmp_path: Path) -> None:
    data = (SAMPLES / "arf-redacted-uses-own-header.eml").read_bytes().replace(
        b"X-Mailprime-Recipient:", b"X-List-Rcpt:")
    path = tmp_path / "complaint.eml"
    path.write_bytes(data)
    default, option = run_many([["bounce", "classify", str(path)],
                                ["bounce", "classify", "--recipient-header", "X-List-Rcpt", str(path)]],
                               cwd=tmp_path)
    assert default.code == 1
    assert option.code == 0, option.err
    [line] = lines(option)
    assert (line["recipient"], line["recipient_source"]) == ("carol@aol.example", "header")
