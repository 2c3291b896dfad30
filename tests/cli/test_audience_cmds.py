"""`mailprime list|contact|segment|retention`: the real command against a database made by `init`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.cli.conftest import DataDir, run_cli

pytestmark = pytest.mark.slow  # runs the real command


def test_import_list_segment_export_erase(data_dir: DataDir, tmp_path: Path) -> None:
    assert data_dir.cli("list", "create", "news", "--opt-in", "single").code == 0
    source = tmp_path / "in.csv"
    source.write_text("email,name,attributes.plan,attributes.age\n"
                      "ann@example.com,Ann,pro,31\nnot-an-address,X,,\nben@example.com,Ben,free,20\n")
    rejects = tmp_path / "rejects.csv"
    done = data_dir.cli("contact", "import", str(source), "--list", "news", "--confirmed",
                        "--rejects", str(rejects))
    assert done.code == 0, done.err
    assert "3 rows: 2 created, 0 updated, 0 skipped, 1 rejected" in done.text
    assert list(csv.reader(io.StringIO(rejects.read_text())))[1][0::2] == ["3", "not-an-address"]

    made, bad = data_dir.cli_many(("segment", "create", "pros", 'attributes.plan = "pro"'),
                                  ("segment", "create", "bad", "attributes.age >"))
    assert made.code == 0
    assert bad.code == 2 and "column 17: expected a value" in bad.text
    counted, members, exported, lists = data_dir.cli_many(
        ("segment", "count", "pros"), ("list", "members", "news"),
        ("contact", "export", "--list", "news"), ("list", "list"))
    assert "1 contacts match" in counted.text
    assert "ann@example.com" in members.text and "confirmed" in members.text
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert [(r["email"], r["status"]) for r in rows] == [("ann@example.com", "confirmed"),
                                                         ("ben@example.com", "confirmed")]
    assert json.loads(rows[0]["attributes"]) == {"age": 31, "plan": "pro"}
    assert "news" in lists.text


def test_gdpr_export_erase_and_retention(data_dir: DataDir, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("email,name\nann@example.com,Ann\n")
    made, _ = data_dir.cli_many(("list", "create", "news"), ("segment", "list"))
    assert made.code == 0
    assert data_dir.cli("contact", "import", str(source), "--list", "news").code == 0
    data = json.loads(data_dir.cli("contact", "export-data", "ann@example.com").out)
    assert data["contact"]["name"] == "Ann"
    assert [m["list"] for m in data["memberships"]] == ["news"]
    assert [m["status"] for m in data["memberships"]] == ["unconfirmed"]  # no --confirmed
    assert {c["source"] for c in data["consent"]} == {"import"}

    erased = data_dir.cli("contact", "erase", "ann@example.com", "--yes")
    assert erased.code == 0 and "erased" in erased.text
    check, shown, after = data_dir.cli_many(("suppression", "check", "ann@example.com"),
                                            ("contact", "show", "ann@example.com"),
                                            ("contact", "export-data", "ann@example.com"))
    assert check.code == 1 and "suppressed" in check.text
    assert shown.code == 1 and "no contact" in shown.text
    held = json.loads(after.out)
    assert held["contact"] is None and held["memberships"] == []
    assert {c["ip"] for c in held["consent"]} == {""}  # pseudonymised, kept as evidence
    retention = data_dir.cli("retention", "run")
    assert retention.code == 0 and "events: 0 deleted" in retention.text


def test_help_of_every_new_command(data_dir: DataDir) -> None:
    for group in ("contact", "list", "segment", "retention"):
        result = run_cli(group, "--help", cwd=data_dir.root)
        assert result.code == 0, result.err
    helps = data_dir.cli_many(*[(g, c, "--help") for g, c in (
        ("contact", "import"), ("contact", "export"), ("contact", "export-data"),
        ("contact", "erase"), ("list", "create"), ("segment", "count"))])
    assert all(h.code == 0 for h in helps)
    assert "GDPR" in helps[2].text and "--confirmed" in helps[0].text
