"""`mailprime list update` and `mailprime segment update`: the real command against a database
made by `init` (the store's rules are tested in tests/storage/test_update_store.py)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import DataDir

pytestmark = pytest.mark.slow  # runs the real command


def test_list_and_segment_update(data_dir: DataDir) -> None:
    made = data_dir.cli_many(("list", "create", "news", "--opt-in", "single"),
                             ("list", "create", "taken"),
                             ("segment", "create", "pros", 'attributes.plan = "pro"'))
    assert all(r.code == 0 for r in made), [r.text for r in made]
    renamed, nothing, segment, bad, empty = data_dir.cli_many(
        ("list", "update", "news", "--name", "letters", "--description", "Monthly",
         "--opt-in", "double"),
        ("list", "update", "taken"),
        ("segment", "update", "pros", "--name", "free", "--expression",
         'attributes.plan = "free"'),
        ("segment", "update", "pros", "--expression", "attributes.plan >"),
        ("segment", "update", "pros"))
    assert renamed.code == 0 and "updated list" in renamed.text, renamed.text
    assert "letters (double opt-in)" in renamed.text
    assert nothing.code == 2 and "nothing to change" in nothing.text
    assert segment.code == 0 and 'free: attributes.plan = "free"' in segment.text, segment.text
    assert bad.code == 2 and "column 18" in bad.text, bad.text
    assert empty.code == 2
    shown, clash, missing = data_dir.cli_many(
        ("list", "show", "letters"), ("list", "update", "letters", "--name", "taken"),
        ("segment", "update", "nope", "--name", "x"))
    assert "Monthly" in shown.text and "double opt-in" in shown.text, shown.text
    assert clash.code == 1 and "already exists" in clash.text, clash.text
    assert missing.code == 1 and "no segment 'nope'" in missing.text
