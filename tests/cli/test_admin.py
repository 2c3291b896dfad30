"""`mailprime domain|account|alias`: each command against a database made by `init`, with the
effect checked in the command's own listing and, for passwords, in the stored hash.

Steps that depend on each other run in order; checks that do not (refusals, listings) run side
by side with `cli_many`.
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import DataDir, password_ok, printed_password

pytestmark = pytest.mark.slow  # starts servers or runs the real command


def test_domain_add_list_remove(data_dir: DataDir) -> None:
    added, bad = data_dir.cli_many(["domain", "add", "B.Test"], ["domain", "add", "not a domain"])
    assert added.code == 0 and "b.test added" in added.text  # stored lower-case
    assert bad.code == 2 and "error:" in bad.text
    listed = data_dir.cli("domain", "list")
    assert listed.code == 0 and "a.test" in listed.out and "b.test" in listed.out

    removed = data_dir.cli("domain", "remove", "b.test")
    assert removed.code == 0 and "b.test removed" in removed.text
    listed, missing = data_dir.cli_many(["domain", "list"], ["domain", "remove", "b.test"])
    assert "b.test" not in listed.out and "a.test" in listed.out
    assert missing.code == 1 and "no local domain b.test" in missing.text


def test_account_add_list_passwd_remove(data_dir: DataDir) -> None:
    added = data_dir.cli("account", "add", "bob@a.test", "--password-stdin", stdin="first-pw\n")
    assert added.code == 0 and "bob@a.test created" in added.text
    assert "first-pw" not in added.out and "password:" not in added.out  # nothing to show
    assert password_ok(data_dir.config, "bob@a.test", "first-pw")

    generated = data_dir.cli("account", "add", "carol@a.test")
    assert generated.code == 0
    carol_pw = printed_password(generated)
    assert password_ok(data_dir.config, "carol@a.test", carol_pw)

    listed = data_dir.cli("account", "list")
    assert listed.code == 0
    assert all(a in listed.out for a in ("postmaster@a.test", "bob@a.test", "carol@a.test"))

    changed = data_dir.cli("account", "passwd", "bob@a.test", "--password-stdin",
                           stdin="second-pw\n")
    assert changed.code == 0 and "password of bob@a.test changed" in changed.text
    assert password_ok(data_dir.config, "bob@a.test", "second-pw")
    assert not password_ok(data_dir.config, "bob@a.test", "first-pw")

    regenerated, removed = data_dir.cli_many(["account", "passwd", "carol@a.test"],
                                             ["account", "remove", "postmaster@a.test"])
    new_carol_pw = printed_password(regenerated)
    assert new_carol_pw != carol_pw
    assert password_ok(data_dir.config, "carol@a.test", new_carol_pw)
    assert removed.code == 0 and "postmaster@a.test removed" in removed.text

    # Refusals: each says why, none changes anything. (Empty stdin: no password.)
    foreign, empty, gone, bad, listed = data_dir.cli_many(
        ["account", "add", "eve@elsewhere.test"],
        ["account", "add", "dave@a.test", "--password-stdin"],
        ["account", "passwd", "postmaster@a.test"],
        ["account", "add", "no-at-sign"],
        ["account", "list"],
    )
    assert foreign.code == 2 and "not a local domain" in foreign.text
    assert empty.code == 1 and "no password on standard input" in empty.text
    assert gone.code == 1 and "no account postmaster@a.test" in gone.text
    assert bad.code == 2 and "error:" in bad.text
    assert "postmaster@a.test" not in listed.out and "dave@a.test" not in listed.out
    again = data_dir.cli("account", "add", "bob@a.test", "--password-stdin", stdin="x\n")
    assert again.code == 1 and "already exists" in again.text
    assert password_ok(data_dir.config, "bob@a.test", "second-pw")


def test_alias_add_list_remove(data_dir: DataDir) -> None:
    pairs = (("info@a.test", "postmaster@a.test"), ("team@a.test", "postmaster@a.test"),
             ("team@a.test", "someone@elsewhere.test"), ("@A.test", "postmaster@a.test"))
    # Side by side: four processes writing to one SQLite database at once must all succeed.
    for added in data_dir.cli_many(*(["alias", "add", s, d] for s, d in pairs)):
        assert added.code == 0, added.err
    listed, bad, missing = data_dir.cli_many(
        ["alias", "list"],
        ["alias", "add", "@not a domain", "postmaster@a.test"],
        ["alias", "remove", "nobody@a.test"],
    )
    assert listed.code == 0
    for needle in ("info@a.test", "team@a.test", "someone@elsewhere.test", "@a.test"):
        assert needle in listed.out
    assert bad.code == 2 and "error:" in bad.text
    assert missing.code == 1 and "no alias nobody@a.test" in missing.text

    one = data_dir.cli("alias", "remove", "team@a.test", "someone@elsewhere.test")
    assert one.code == 0
    remaining = data_dir.cli("alias", "list").out
    assert "someone@elsewhere.test" not in remaining and "team@a.test" in remaining

    removed = data_dir.cli_many(["alias", "remove", "info@a.test"],
                                ["alias", "remove", "team@a.test"],
                                ["alias", "remove", "@a.test"])
    assert [r.code for r in removed] == [0, 0, 0]
    remaining = data_dir.cli("alias", "list").out
    assert all(a not in remaining for a in ("info@a.test", "team@a.test", "@a.test"))
